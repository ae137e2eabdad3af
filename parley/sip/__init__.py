"""Native SIP endpoint: signalling (message, sdp, digest, endpoint) and RTP media (rtp, jitter, dtmf, media)."""
