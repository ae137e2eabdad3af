#!/usr/bin/env bash
# System packages the tests drive for real: espeak-ng (a second family of voices for
# test callers, and Parley's fallback TTS), sox, and SIP peers (kamailio, SIPp, baresip).
# Installed with apt-get when missing.
set -euo pipefail
need=()
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need+=(sox)
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || need+=(kamailio)  # SIP load balancer tests
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)  # SIPp: callers and trunks for the SIP endpoint tests
command -v baresip >/dev/null 2>&1 || need+=(baresip)  # a softphone calling the SIP endpoint
[ -x /usr/bin/chromium ] || need+=(chromium)  # the console's browser tests (Playwright drives it)
[ -x /usr/sbin/nginx ] || need+=(nginx)  # tests/test_nginx.py runs deploy/nginx/parley.conf (its service is not started)
[ -x /usr/sbin/haproxy ] || need+=(haproxy)  # tests/test_haproxy.py runs deploy/haproxy/haproxy.cfg
[ -x /usr/sbin/nft ] || need+=(nftables)  # `nft -c` checks deploy/nftables.conf; installing loads no rules
command -v pg_dump >/dev/null 2>&1 || need+=(postgresql-client)  # tests/test_backup.py
dpkg -s rsyslog-elasticsearch >/dev/null 2>&1 || need+=(rsyslog-elasticsearch)  # ships a log file in test_log_shipping
command -v promtool >/dev/null 2>&1 || need+=(prometheus)  # promtool and a real Prometheus (tests/test_metrics_ops.py)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing ${need[*]}: run as root or install them with apt-get" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends "${need[@]}" || { apt-get update && apt-get install -y --no-install-recommends "${need[@]}"; }
if [[ " ${need[*]} " == *" prometheus "* ]]; then  # the package starts one on :9090; the tests run their own
  if [ -d /run/systemd/system ]; then systemctl disable --now prometheus || true
  elif [ -x /etc/init.d/prometheus ]; then /etc/init.d/prometheus stop || true; fi
fi
