"""Python functions as tools: ``@function_tool`` (LiveKit's shape) and the document's ``type: python`` entry.

The docstring's first paragraph is the description and the type hints are the parameters' JSON schema (pydantic
builds it; descriptions from ``Annotated[..., Field(description=...)]`` or the docstring's ``Args:`` section).
A parameter annotated :class:`ToolContext` receives the call's context and is not in the schema. A plain ``def``
runs on a thread (:func:`parley.offload.off_loop`) so it cannot stall the call's audio. An exception becomes
``ToolError("failed", <its type name>)``: its message may hold a secret, so it is logged (redacted), not put in
events.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from collections.abc import Callable
from importlib.metadata import entry_points
from types import SimpleNamespace
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints, overload

import structlog
from pydantic import BaseModel, Field, ValidationError, create_model, model_validator
from pydantic.fields import FieldInfo

from parley.offload import off_loop
from parley.redact import redact_text
from parley.services.secrets import SecretSource
from parley.tools.base import DEFAULT_DEADLINE_S, AgentTool, SideEffect, ToolContext, ToolError, ToolResult
from parley.tools.config import ToolConfigBase

log = structlog.get_logger(__name__)
ENTRY_POINT_GROUP = "parley.tools"
_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters):\s*$")
_ARG_LINE = re.compile(r"^\s+(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def _docstring(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The description (first paragraph) and the ``Args:`` section's one-line-or-more argument descriptions."""
    doc = inspect.getdoc(fn) or ""
    description = " ".join(doc.split("\n\n", 1)[0].split())
    args: dict[str, str] = {}
    current, inside = "", False
    for line in doc.splitlines():
        if _ARGS_HEADER.match(line):
            inside = True
            continue
        if not inside:
            continue
        if line and not line[0].isspace():  # the next section (Returns:, Raises: ...)
            break
        match = _ARG_LINE.match(line)
        if match:
            current = match.group(1).lstrip("*")
            args[current] = match.group(2).strip()
        elif current and line.strip():
            args[current] = f"{args[current]} {line.strip()}"
    return description, args


def _is_context(hint: Any) -> bool:
    if get_origin(hint) is Annotated:
        hint = get_args(hint)[0]
    return inspect.isclass(hint) and issubclass(hint, ToolContext)


def _described(hint: Any) -> bool:
    """Whether ``Annotated[..., Field(description=...)]`` already describes the parameter (it wins over the
    docstring)."""
    if get_origin(hint) is not Annotated:
        return False
    return any(isinstance(m, FieldInfo) and m.description for m in get_args(hint)[1:])


def _arguments_model(fn: Callable[..., Any], arg_docs: dict[str, str]) -> tuple[type[BaseModel], str | None]:
    """The parameters as a pydantic model (schema, and coercion: an Enum's value to its member) and the name of the
    ToolContext parameter, if any."""
    # the parameters' hints only: a return type need not be resolvable (a class local to the caller)
    params_only = SimpleNamespace(__annotations__={k: v for k, v in fn.__annotations__.items() if k != "return"})
    hints = get_type_hints(params_only, globalns=getattr(fn, "__globals__", {}), include_extras=True)
    fields: dict[str, Any] = {}
    context_param = None
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {fn.__name__}: *args and **kwargs have no schema")
        hint = hints.get(name, Any)
        if _is_context(hint):
            context_param = name
            continue
        default = ... if param.default is param.empty else param.default
        info = default if isinstance(default, FieldInfo) else Field(default=default)
        if name in arg_docs and info.description is None and not _described(hint):
            hint = Annotated[hint, Field(description=arg_docs[name])]
        fields[name] = (hint, info)
    return create_model(f"{fn.__name__}_arguments", **fields), context_param


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema


class FunctionTool(AgentTool):
    """A Python function as a tool; made by :func:`function_tool`, still callable as the plain function."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        side_effect: SideEffect | str = SideEffect.READ,
        filler: str = "",
        deadline_s: float = DEFAULT_DEADLINE_S,
    ) -> None:
        doc, arg_docs = _docstring(fn)
        self.fn = fn
        self.name = name or fn.__name__
        self.description = description or doc or self.name
        self._model, self._context_param = _arguments_model(fn, arg_docs)
        self.parameters = _schema(self._model)
        self.side_effect, self.filler, self.deadline_s = SideEffect(side_effect), filler, deadline_s
        self._is_async = inspect.iscoroutinefunction(fn)
        functools.update_wrapper(self, fn)

    __name__: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        try:
            checked = self._model.model_validate(arguments)
        except ValidationError as exc:
            raise ToolError("bad-arguments", f"{self.name}: {exc.error_count()} invalid argument(s)") from None
        kwargs = {name: getattr(checked, name) for name in type(checked).model_fields}
        if self._context_param:
            kwargs[self._context_param] = context
        try:
            value = await self.fn(**kwargs) if self._is_async else await off_loop(self.fn, **kwargs)
        except ToolError:
            raise
        except Exception as exc:  # any failure of user code: the caller hears the recovery line
            log.warning("python_tool_failed", tool=self.name, error=type(exc).__name__, detail=redact_text(str(exc)))
            raise ToolError("failed", type(exc).__name__) from None
        return value if isinstance(value, ToolResult) else ToolResult(_jsonable(value))


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


@overload
def function_tool(fn: Callable[..., Any], /) -> FunctionTool: ...


@overload
def function_tool(
    *,
    name: str | None = None,
    description: str | None = None,
    side_effect: SideEffect | str = SideEffect.READ,
    filler: str = "",
    deadline_s: float = DEFAULT_DEADLINE_S,
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def function_tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    side_effect: SideEffect | str = SideEffect.READ,
    filler: str = "",
    deadline_s: float = DEFAULT_DEADLINE_S,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Make a function a tool: ``@function_tool`` or ``@function_tool(side_effect="idempotent", deadline_s=5)``."""

    def wrap(f: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(
            f, name=name, description=description, side_effect=side_effect, filler=filler, deadline_s=deadline_s
        )

    return wrap(fn) if fn is not None else wrap


def load_function(function: str | None, entry_point: str | None) -> FunctionTool:
    """The tool a document names by ``pkg.mod:func`` or by entry point; ValueError naming it when it cannot be."""
    label = function or f"entry point {entry_point!r}"
    try:
        if function is not None:
            module_name, _, attr = function.partition(":")
            target: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                target = getattr(target, part)
        else:
            found = entry_points(group=ENTRY_POINT_GROUP, name=entry_point or "")
            if not found:
                raise LookupError(f"no {ENTRY_POINT_GROUP} entry point named {entry_point!r}")
            target = next(iter(found)).load()
    except Exception as exc:  # an import error is the document's problem: say which function
        raise ValueError(f"cannot load tool function {label}: {type(exc).__name__}: {exc}") from None
    if not isinstance(target, FunctionTool):  # only what its author marked as a tool: never os:system
        raise ValueError(f"tool function {label} is not decorated with @function_tool")
    return target


class PythonToolConfig(ToolConfigBase):
    """A ``type: python`` entry: the function by module path or entry point; the rest defaults from it."""

    type: Literal["python"]
    function: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
    entry_point: str | None = None
    name: str = ""  # filled from the function
    description: str = Field(default="", max_length=1024)
    parameters: dict[str, Any] = Field(default_factory=dict)
    side_effect: SideEffect | None = None  # type: ignore[assignment]
    deadline_s: float | None = Field(default=None, gt=0, le=120)  # type: ignore[assignment]
    filler: str | None = Field(default=None, max_length=300)  # type: ignore[assignment]

    @model_validator(mode="before")
    @classmethod
    def _load(cls, data: Any) -> Any:
        """Import at load, so a wrong path is a config error; fill name/description/parameters from the function."""
        if not isinstance(data, dict):
            return data
        if (data.get("function") is None) == (data.get("entry_point") is None):
            raise ValueError("a python tool names either function (pkg.module:func) or entry_point")
        tool = load_function(data.get("function"), data.get("entry_point"))
        filled = {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
        return {**filled, **{k: v for k, v in data.items() if v not in (None, "", {})}}

    def _tool(self) -> FunctionTool:
        return load_function(self.function, self.entry_point)

    async def create(self, secrets: SecretSource) -> list[AgentTool]:
        source = self._tool()
        tool = FunctionTool(
            source.fn,
            name=self.name,
            description=self.description,
            side_effect=self.side_effect or source.side_effect,
            filler=source.filler if self.filler is None else self.filler,
            deadline_s=self.deadline_s or source.deadline_s,
        )
        tool.parameters = self.parameters
        return [tool]
