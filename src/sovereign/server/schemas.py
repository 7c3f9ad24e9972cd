"""OpenAI wire schemas (requests) and their translation into domain types.

Parsing is lenient the way vLLM, llama.cpp and LiteLLM settled it: unknown fields (top level, in
messages or parts) are accepted and reported by :meth:`WireModel.ignored_fields` (the route sends
them back in ``X-Sovereign-Ignored-Fields`` and logs them; ``server.strict_requests`` makes them a
400 instead); ``null`` means "the default"; text that is not valid Unicode (a lone UTF-16
surrogate) is a 400 naming the field. Sampler fields engines share beyond OpenAI's (``top_k``,
``min_p``, ``repetition_penalty``) are forwarded to engines that take them. Sovereign's own
extensions: ``ignore_eos``, ``stream_options.continuous_usage_stats`` (vLLM), ``cache``
(response-cache control) and ``conversation_id``. Tools (``tools``, ``tool_choice``,
``parallel_tool_calls``, assistant ``tool_calls``, ``tool`` messages), ``response_format``
``json_schema`` and ``logprobs`` / ``top_logprobs`` are translated; a deployment that cannot
honour one is skipped by the router (400 ``unsupported_parameter`` naming the feature when none
can). Fields no engine path honours yet (``n > 1``, ``logit_bias``) are rejected with 400
``unsupported_parameter``, never silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sovereign.errors import InvalidRequestError, UnsupportedParameterError
from sovereign.types import ChatMessage, GenerationRequest, SamplingParams, ToolCall

MAX_OUTPUT_TOKENS = 1_000_000
MAX_STOP = 64


def check_json_values(value: Any, where: str) -> None:
    """Raise ValueError naming ``where`` when a string in ``value`` holds a lone UTF-16 surrogate
    (JSON allows ``"\\ud800"``; it is not Unicode text and cannot be encoded for an engine), or an
    integer does not fit in 64 bits (JSON allows any; orjson, and so every engine call, cannot send it)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not -(2**63) <= value < 2**64:
            raise ValueError(f"{where}: an integer that does not fit in 64 bits")
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"{where}: a lone UTF-16 surrogate at {exc.start} is not valid Unicode") from None
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_json_values(item, f"{where}.{i}")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_json_values(key, where)
            check_json_values(item, f"{where}.{key}")


class UnicodeChecked(BaseModel):
    """A request body whose strings must all be valid Unicode (Sovereign's own APIs: strict fields)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        check_json_values(data, "body")
        return data


class WireModel(BaseModel):
    """Base of the OpenAI wire models: unknown fields kept aside, ``null`` = default, Unicode checked."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _defaults_for_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            check_json_values(data, "body")
            return {k: v for k, v in data.items() if v is not None}
        return data

    def ignored_fields(self, where: str = "") -> list[str]:
        """Dotted names of the unknown fields at this level and in nested wire models."""
        out = [f"{where}{name}" for name in self.model_extra or {}]
        for name, value in self:
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                if isinstance(item, WireModel):
                    index = f".{i}" if isinstance(value, list) else ""
                    out += item.ignored_fields(f"{where}{name}{index}.")
        return out


class TextPart(WireModel):
    type: Literal["text"]
    text: str


class ImageUrl(WireModel):
    url: str = Field(min_length=1, pattern=r"^(https?://|data:image/)")
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(WireModel):
    type: Literal["image_url"]
    image_url: ImageUrl


class InputAudio(WireModel):
    data: str = Field(min_length=1)
    format: Literal["wav", "mp3"]


class AudioPart(WireModel):
    type: Literal["input_audio"]
    input_audio: InputAudio


ContentPart = Annotated[TextPart | ImagePart | AudioPart, Field(discriminator="type")]


FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


class FunctionCall(WireModel):
    name: str = Field(pattern=FUNCTION_NAME)
    arguments: str


class WireToolCall(WireModel):
    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionDefinition(WireModel):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class WireTool(WireModel):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(WireModel):
    name: str = Field(pattern=FUNCTION_NAME)


class NamedToolChoice(WireModel):
    type: Literal["function"]
    function: NamedFunction


class WireMessage(WireModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[WireToolCall] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))

    def parts(self) -> tuple[dict[str, Any], ...]:
        """The content parts as sent when any is an image or audio (never flattened to text), else ()."""
        if isinstance(self.content, list) and any(not isinstance(p, TextPart) for p in self.content):
            return tuple(p.model_dump(exclude_none=True) for p in self.content)
        return ()


class StreamOptions(WireModel):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class JsonSchemaFormat(WireModel):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(WireModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class SamplingFields(WireModel):
    """Fields shared by chat and text completions."""

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=MAX_OUTPUT_TOKENS)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=16)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    logit_bias: dict[str, float] | None = None  # token id (as a string) -> bias in [-100, 100]
    user: str | None = Field(None, max_length=256)
    ignore_eos: bool = False
    cache: Literal["auto", "no-cache", "no-store", "off", "force"] | None = None  # see docs/cache.md

    top_k: int | None = Field(None, ge=0, le=1000)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(None, gt=0.0, le=10.0)

    @field_validator("stop")
    @classmethod
    def _stop_limit(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > MAX_STOP:  # OpenAI allows 4; engines take more
            raise ValueError(f"at most {MAX_STOP} stop sequences are allowed")
        return value

    def sampling(self, max_tokens: int | None, json_mode: bool = False,
                 json_schema: dict[str, Any] | None = None) -> SamplingParams:
        """The decoding parameters. Raises InvalidRequestError: ``top_logprobs`` without ``logprobs``."""
        if self.top_logprobs and not self.logprobs:
            raise InvalidRequestError("top_logprobs needs logprobs: true.", param="top_logprobs")
        bias = self.logit_bias or {}
        if any(not k.isdigit() or not -100 <= v <= 100 for k, v in bias.items()):
            raise InvalidRequestError("logit_bias maps token ids (digit strings) to biases in [-100, 100].",
                                      param="logit_bias")
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=stops,
            json_mode=json_mode,
            ignore_eos=self.ignore_eos,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            json_schema=json_schema,
            logprobs=bool(self.logprobs),
            top_logprobs=self.top_logprobs or 0,
            logit_bias={int(k): v for k, v in bias.items()},
            samplers={k: v for k, v in (("top_k", self.top_k), ("min_p", self.min_p),
                                        ("repetition_penalty", self.repetition_penalty)) if v is not None},
        )


class ChatCompletionRequest(SamplingFields):
    """``POST /v1/chat/completions`` body."""

    messages: list[WireMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_OUTPUT_TOKENS)
    response_format: ResponseFormat | None = None
    tools: list[WireTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    conversation_id: str | None = Field(None, max_length=128)
    metadata: dict[str, str] | None = None

    def to_domain(self) -> GenerationRequest:
        """Validate what pydantic cannot and build the engine-neutral request.

        Raises:
            InvalidRequestError: max_tokens and max_completion_tokens disagree; a tool_choice naming no
                tool, or without tools; a tool message whose tool_call_id matches no earlier call;
                json_schema without a schema; a malformed logit_bias.
        """
        tools = tuple(t.model_dump(exclude_none=True) for t in self.tools or ())
        choice = self.tool_choice.model_dump() if isinstance(self.tool_choice, NamedToolChoice) else self.tool_choice
        if isinstance(self.tool_choice, NamedToolChoice):
            name = self.tool_choice.function.name
            if name not in {t["function"]["name"] for t in tools}:
                raise InvalidRequestError(f"tool_choice names function {name!r}, which is not in tools.",
                                          param="tool_choice")
        elif self.tool_choice == "required" and not tools:
            raise InvalidRequestError("tool_choice 'required' needs at least one tool in tools.", param="tool_choice")
        json_mode, json_schema = False, None
        if self.response_format is not None:
            if self.response_format.type == "json_schema":
                spec = self.response_format.json_schema
                if spec is None or spec.schema_ is None:
                    raise InvalidRequestError("response_format json_schema needs json_schema.schema (a JSON Schema).",
                                              param="response_format.json_schema")
                json_schema = spec.schema_
            json_mode = self.response_format.type == "json_object"
        if (
            self.max_tokens is not None
            and self.max_completion_tokens is not None
            and self.max_tokens != self.max_completion_tokens
        ):
            raise InvalidRequestError(
                "max_tokens and max_completion_tokens disagree; send only max_completion_tokens.",
                param="max_completion_tokens",
            )
        limit = self.max_completion_tokens or self.max_tokens
        return GenerationRequest(
            model=self.model, sampling=self.sampling(limit, json_mode, json_schema), messages=self._messages(),
            user=self.user, conversation_id=self.conversation_id, tools=tools, tool_choice=choice,
            parallel_tool_calls=self.parallel_tool_calls,
        )

    def _messages(self) -> tuple[ChatMessage, ...]:
        """Domain messages. Raises InvalidRequestError: a tool result answering no earlier call."""
        out: list[ChatMessage] = []
        calls: set[str] = set()
        for i, m in enumerate(self.messages):
            tool_calls = tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ())
            calls.update(c.id for c in tool_calls)
            if m.role == "tool" and m.tool_call_id not in calls:
                raise InvalidRequestError(
                    f"messages[{i}] is a tool result for tool_call_id {m.tool_call_id!r}, which no earlier "
                    "assistant message called.", param=f"messages.{i}.tool_call_id")
            out.append(ChatMessage(role=m.role, content=m.text(), tool_calls=tool_calls, tool_call_id=m.tool_call_id,
                                   name=m.name, parts=m.parts()))
        return tuple(out)


class CompletionRequest(SamplingFields):
    """``POST /v1/completions`` body (legacy text completions)."""

    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    def to_domain(self) -> GenerationRequest:
        if self.echo or self.suffix or (self.best_of not in (None, 1)):
            raise UnsupportedParameterError("echo, suffix and best_of are not supported.", param="echo")
        prompt = self.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise UnsupportedParameterError("Send one prompt per request (a list of one string).", param="prompt")
            prompt = prompt[0]
        return GenerationRequest(
            model=self.model, sampling=self.sampling(self.max_tokens), prompt=prompt, user=self.user
        )


class EmbeddingRequest(WireModel):
    """``POST /v1/embeddings`` body."""

    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    def texts(self, max_inputs: int = 2048) -> list[str]:
        """The input as a list of non-empty strings.

        Raises:
            InvalidRequestError: empty input, an empty string, too many inputs.
            UnsupportedParameterError: token-id arrays.
        """
        items = [self.input] if isinstance(self.input, str) else list(self.input)
        if not items:
            raise InvalidRequestError("input must not be empty.", param="input")
        if not all(isinstance(item, str) for item in items):
            raise UnsupportedParameterError("Token-id input is not supported; send strings.", param="input")
        if len(items) > max_inputs:
            raise InvalidRequestError(f"At most {max_inputs} inputs per request.", param="input")
        texts = [str(item) for item in items]
        if any(not text.strip() for text in texts):
            raise InvalidRequestError("input strings must not be empty.", param="input")
        return texts


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model`` as the JSON request body of a route that parses its body
    itself (so that the OpenAPI schema, and clients and fuzzers generated from it, know the body).

    Returns ``{"requestBody": {"required": True, "content": {"application/json": {"schema": ...}}}}``
    with the model's ``$defs`` references inlined (``openapi_extra`` cannot add components).
    """
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.rsplit("/", 1)[1]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}


class ErrorDetail(BaseModel):
    """The inside of the OpenAI error envelope."""

    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorEnvelope(BaseModel):
    """``{"error": {"message", "type", "param", "code"}}``: the body of every error answer of the
    OpenAI-shaped routes (:meth:`sovereign.errors.SovereignError.to_envelope`, validation errors
    included: those are 400, never FastAPI's 422)."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": text} for status, text in (
        (400, "Invalid request (malformed JSON, a wrong or missing field, an unsupported parameter)."),
        (401, "Missing or unknown API key."),
        (403, "The key lacks the scope this route needs."),
        (404, "Unknown model, route or resource."),
        (413, "Request body larger than server.max_body_bytes."),
        (429, "Rate limit reached (Retry-After says when to retry)."),
        (503, "Engine overloaded, still loading or unavailable, or the room serving this route is off."),
    )
}
"""``responses=`` of a router whose routes answer errors in :class:`ErrorEnvelope` (OpenAPI documents them)."""
