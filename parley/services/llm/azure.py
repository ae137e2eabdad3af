"""Azure OpenAI as a provider of its own: a deployment on an Azure resource, its API version, the ``api-key``.

The wire format is OpenAI's (the official SDK's ``AsyncAzureOpenAI`` client, via :mod:`.openai_compat`); this
module only makes Azure's three settings required, so a document naming ``provider: azure`` without them is a
validation error naming the field rather than a call that fails. ``model`` defaults to the deployment.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from parley.services.llm.base import registry
from parley.services.llm.openai_compat import OpenAICompatibleLLM


@registry.register("azure")
class AzureOpenAILLM(OpenAICompatibleLLM):
    class Options(OpenAICompatibleLLM.Options):
        azure_endpoint: str  # https://<resource>.openai.azure.com
        azure_deployment: str = Field(min_length=1, max_length=128)
        api_version: str = Field("2024-10-21", min_length=1, max_length=32)
        model: str = ""  # the deployment's model; only informational on Azure

        @model_validator(mode="before")
        @classmethod
        def _model_is_the_deployment(cls, data: Any) -> Any:
            if isinstance(data, dict) and not data.get("model") and data.get("azure_deployment"):
                data = {**data, "model": data["azure_deployment"]}
            return data
