"""Talk to a Parley agent over the WebSocket: stream a WAV in at real time, save what the agent says.

    python examples/talk_client.py --url http://127.0.0.1:8000 --key pk_... --agent Receptionist \\
        --input question.wav --output reply.wav

Events (transcripts, agent text, turn metrics) are printed as they arrive. The
protocol is in docs/talk.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx
import numpy as np
import websockets

from parley.audio import load_audio, resample, write_wav

RATE = 16000
FRAME = RATE // 50  # 20 ms


async def talk(url: str, key: str, agent: str, input_path: str, output_path: str, tail_secs: float) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
        r = await http.post(f"/v1/agents/{agent}/talk-token")
        r.raise_for_status()
        ws_url = url.replace("http", "ws", 1) + r.json()["url"]

    audio = load_audio(input_path)
    pcm = audio.mono()
    if audio.sample_rate != RATE:
        pcm = resample(pcm, audio.sample_rate, RATE)
    pcm = np.concatenate([pcm, np.zeros(int(tail_secs * RATE), dtype=np.int16)])
    received = np.zeros(0, dtype=np.int16)
    start = time.monotonic()

    async with websockets.connect(ws_url, max_size=2**20) as ws:

        async def send() -> None:
            for k in range(0, len(pcm) // FRAME):
                await asyncio.sleep(max(0.0, start + k * 0.02 - time.monotonic()))  # real time, like a phone
                await ws.send(pcm[k * FRAME : (k + 1) * FRAME].astype("<i2").tobytes())
            await ws.send(json.dumps({"type": "end"}))

        async def receive() -> None:
            nonlocal received
            async for message in ws:
                if isinstance(message, bytes):
                    at = int((time.monotonic() - start) * RATE)  # place the reply where it was heard
                    if received.size < at:
                        received = np.concatenate([received, np.zeros(at - received.size, dtype=np.int16)])
                    received = np.concatenate([received, np.frombuffer(message, dtype="<i2")])
                else:
                    event = json.loads(message)
                    print(json.dumps(event))
                    if event.get("type") == "end":
                        return

        await asyncio.gather(send(), receive())
    write_wav(output_path, received, RATE)
    print(f"saved the agent's audio to {output_path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--key", required=True, help="an API key (pk_...)")
    p.add_argument("--agent", required=True, help="agent id or name")
    p.add_argument("--input", required=True, help="caller WAV (any rate)")
    p.add_argument("--output", default="reply.wav")
    p.add_argument("--tail", type=float, default=6.0, help="seconds of silence after the input, to hear the answer")
    a = p.parse_args()
    asyncio.run(talk(a.url.rstrip("/"), a.key, a.agent, a.input, a.output, a.tail))


if __name__ == "__main__":
    main()
