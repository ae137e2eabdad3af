"""LLM text → speakable sentences, so TTS starts on the first one while the LLM writes on."""

from __future__ import annotations

from parley.agent.sentences import SentenceBuffer
from parley.pipeline.frames import Direction, Frame, LLMDone, LLMText, SpeakText
from parley.pipeline.processor import Processor


class SentenceChunker(Processor):
    """Groups LLM tokens into sentences so TTS can start on the first one."""

    def __init__(self, first_clause_words: int = 3, first_max_words: int = 6) -> None:
        super().__init__()
        self._first_clause_words = first_clause_words
        self._first_max_words = first_max_words
        self._buffers: dict[int, SentenceBuffer] = {}

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, LLMText):
            buf = self._buffers.setdefault(
                frame.turn_id, SentenceBuffer(self._first_clause_words, first_max_words=self._first_max_words)
            )
            for sentence in buf.feed(frame.text):
                await self.push(SpeakText(turn_id=frame.turn_id, text=sentence, greeting=frame.turn_id == 0))
        elif isinstance(frame, LLMDone):
            done = self._buffers.pop(frame.turn_id, None)
            if done is not None and (rest := done.flush()):
                await self.push(SpeakText(turn_id=frame.turn_id, text=rest, greeting=frame.turn_id == 0))
            await self.push(frame, direction)
        else:
            await self.push(frame, direction)

    async def on_interruption(self) -> None:
        self._buffers.clear()
