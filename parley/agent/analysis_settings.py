"""The agent document's ``analysis:`` block: what the post-call analysis produces from a call's transcript.

Kept apart from :mod:`parley.agent.document` so the document gains one field; the runner is
:mod:`parley.calls.analysis`.
"""

from __future__ import annotations

from typing import Any

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from parley.agent.limits import Line, Text
from parley.services.llm.base import registry as llm_registry
from parley.services.registry import ProviderPackageMissing, UnknownProvider

MAX_FIELDS = 50
MAX_CRITERIA_CHARS = 4_000


class AnalysisLLM(BaseModel):
    """The LLM that analyses the call, when not the agent's own (``provider`` and its ``options``)."""

    model_config = ConfigDict(extra="forbid")

    provider: Line = Field(max_length=64)
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _provider_exists(self) -> AnalysisLLM:
        try:
            llm_registry.options(self.provider, self.options)
        except ProviderPackageMissing:
            pass  # like the agent's own llm: it fails when the analysis runs, with a clear reason
        except UnknownProvider as exc:
            raise ValueError(str(exc)) from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"options.{where}: {first['msg']}") from None
        return self


class AnalysisSettings(BaseModel):
    """``summary``: a short summary; ``fields``: JSON-schema ``properties`` the LLM fills in (validated);
    ``success``: criteria the call is judged against (true/false and a one-line reason). Empty parts are skipped."""

    model_config = ConfigDict(extra="forbid")

    summary: bool = True
    fields: dict[str, Any] = Field(default_factory=dict)
    success: Text = Field("", max_length=MAX_CRITERIA_CHARS)
    llm: AnalysisLLM | None = None
    timeout_secs: float = Field(60.0, gt=0, le=600, description="the whole analysis, retry included")

    @field_validator("fields")
    @classmethod
    def _valid_schema(cls, v: dict[str, Any]) -> dict[str, Any]:
        if len(v) > MAX_FIELDS:
            raise ValueError(f"at most {MAX_FIELDS} fields, not {len(v)}")
        try:
            jsonschema.Draft202012Validator.check_schema(fields_schema(v))
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON schema: {exc.message[:200]}") from None
        return v

    def wants_anything(self) -> bool:
        return self.summary or bool(self.fields) or bool(self.success.strip())


def fields_schema(fields: dict[str, Any]) -> dict[str, Any]:
    """The object schema the ``fields`` answer must match: the named properties (each optional), nothing else."""
    return {"type": "object", "properties": fields, "additionalProperties": False}
