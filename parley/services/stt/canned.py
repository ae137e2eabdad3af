"""A model-free STT that hears every utterance as the same text.

For load tests and pipelines whose replies do not depend on the words (a canned
agent): it measures the media path without a speech model's cost. Never use it for
real callers.
"""

from __future__ import annotations

from pydantic import Field

from parley.services.registry import ProviderOptions
from parley.services.stt.base import STT, registry


class CannedSTTOptions(ProviderOptions):
    text: str = Field("hello", min_length=1, description="what every utterance is heard as")


@registry.register("canned")
class CannedSTT(STT):
    Options = CannedSTTOptions
    sample_rate = 8000

    def __init__(self, options: CannedSTTOptions | None = None) -> None:
        self.options = options or CannedSTTOptions()

    async def transcribe(self, pcm: bytes, language: str = "en") -> str:
        return self.options.text if pcm else ""
