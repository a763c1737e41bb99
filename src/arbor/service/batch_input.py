"""Reading a ``POST /v1/batches`` request: a multipart upload (``file`` plus option fields)
or a JSON body naming a dataset under ``ARBOR_HOME/datasets`` or carrying inline ``rows``.

Everything wrong with the request is a 422 problem naming the field (``param``): no target
or two of them, an unknown agent/workflow/model, a template that does not parse, a dataset
path outside the datasets directory, an unreadable CSV header, an empty dataset. The body size
limit (413) bounds uploads. Malformed rows are not the request's fault: they become failed items.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from arbor.core.errors import ArborError, NotFoundError
from arbor.runtime.datasets import DatasetError, DatasetFormat, read_dataset
from arbor.runtime.spec import BatchOptions, BatchSpec
from arbor.store.batches import BatchKind, NewItem

if TYPE_CHECKING:
    from arbor.service.context import ServiceContext

__all__ = ["BatchCreate", "datasets_dir", "invalid", "read_create_request"]

_TARGETS: tuple[BatchKind, ...] = ("template", "agent", "workflow")
#: Request fields that are BatchOptions.
_OPTIONS = (
    "concurrency",
    "rpm",
    "tpm",
    "budget_usd",
    "max_attempts",
    "lease_seconds",
    "temperature",
    "max_tokens",
)


class BatchCreate(BaseModel):
    """A batch's treatment and options; a JSON body also names its rows (``dataset`` or
    ``rows``), an upload sends them as ``file``."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    template: str | None = Field(None, max_length=100_000, description="Jinja2 prompt")
    agent: str | None = Field(None, max_length=200, description="A stored agent's name")
    workflow: str | None = Field(None, max_length=200, description="A workflow's name")
    model: str | None = Field(None, max_length=200, description="provider:model")
    concurrency: int | None = Field(None, ge=1, le=4096)
    rpm: int | None = Field(None, ge=1, le=10_000_000)
    tpm: int | None = Field(None, ge=1, le=1_000_000_000)
    budget_usd: float | None = Field(None, ge=0, le=1e9)
    max_attempts: int | None = Field(None, ge=1, le=20, description="Tries per item")
    lease_seconds: float | None = Field(
        None, gt=0, le=3600, description="How soon a dead server's items are taken over"
    )
    temperature: float | None = Field(None, ge=0, le=2, description="Template batches")
    max_tokens: int | None = Field(None, ge=1, le=1_000_000, description="Template batches")
    format: Literal["jsonl", "csv"] | None = Field(
        None, description="The dataset's format (default: from its name)"
    )
    dataset: str | None = Field(
        None, min_length=1, max_length=1000, description="A file under ARBOR_HOME/datasets"
    )
    rows: list[Any] | None = Field(None, description="The rows themselves")


def invalid(message: str, *, param: str, loc: str = "body") -> RequestValidationError:
    """A 422 problem naming ``param`` (at ``loc``: body, form or query) in its ``errors``."""
    message = message.removeprefix(f"{param}: ")
    error = {"loc": (loc, param), "msg": message, "type": "value_error"}
    return RequestValidationError([error])


def datasets_dir(ctx: ServiceContext) -> Path:
    """Where JSON requests may name datasets: ``ARBOR_HOME/datasets``."""
    return ctx.settings.home / "datasets"


async def read_create_request(
    request: Request, ctx: ServiceContext, key_id: str | None
) -> tuple[list[NewItem] | Iterator[NewItem], BatchSpec, str]:
    """The rows, the checked spec and the name of the batch a request asks for."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _from_upload(request, ctx, key_id)
    if content_type not in ("application/json", ""):
        raise invalid("send the batch as application/json or multipart/form-data", param="body")
    try:
        body = await request.json()
    except ValueError:
        raise invalid("the body is not valid JSON", param="body") from None
    create = _validated(body, loc="body")
    spec = await _spec(create, ctx, key_id)
    if (create.dataset is None) == (create.rows is None):
        raise invalid(
            "give exactly one of dataset (a file under ARBOR_HOME/datasets) or rows "
            "(or upload a file as multipart/form-data)",
            param="dataset",
        )
    if create.rows is not None:
        if not create.rows:
            raise invalid("rows is empty", param="rows")
        items = [NewItem(i, row) for i, row in enumerate(create.rows)]
        return items, spec, create.name or f"{len(items)} rows"
    assert create.dataset is not None
    path = _dataset_path(ctx, create.dataset)
    rows = _checked_rows(path, create.format, param="dataset")
    return rows, spec, create.name or path.name


async def _from_upload(
    request: Request, ctx: ServiceContext, key_id: str | None
) -> tuple[list[NewItem], BatchSpec, str]:
    try:
        form = await request.form(max_files=1, max_fields=32)
    except Exception as exc:  # the multipart parser's own errors (malformed body, limits)
        raise invalid(f"unreadable multipart body: {exc}", param="body") from None
    try:
        upload = form.get("file")
        fields: dict[str, Any] = {}
        for name, value in form.multi_items():
            if name == "file":
                continue
            if not isinstance(value, str):
                raise invalid(f"{name}: only file may be a file", param=name)
            if name in ("dataset", "rows"):
                raise invalid(f"{name}: not with an upload (the rows come from file)", param=name)
            if value != "":
                fields[name] = value
        create = _validated(fields, loc="form")
        spec = await _spec(create, ctx, key_id)
        if not isinstance(upload, UploadFile):
            raise invalid("file: upload the dataset as the file field", param="file")
        filename = Path(upload.filename or "upload").name or "upload"
        fmt = _format(filename, create.format)
        data = await upload.read()
    finally:
        await form.close()
    with tempfile.TemporaryDirectory(prefix="arbor-upload-") as tmp:
        path = Path(tmp) / f"upload.{fmt}"
        path.write_bytes(data)
        rows = list(_checked_rows(path, fmt, param="file"))
    return rows, spec, create.name or filename


def _validated(value: Any, *, loc: str) -> BatchCreate:
    if not isinstance(value, dict):
        raise invalid("the body must be a JSON object", param="body")
    try:
        return BatchCreate.model_validate(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        for error in errors:
            error["loc"] = (loc, *error["loc"])
        raise RequestValidationError(errors) from None


async def _spec(create: BatchCreate, ctx: ServiceContext, key_id: str | None) -> BatchSpec:
    """The BatchSpec, checked: exactly one target, a known model, a template that parses,
    a known agent or workflow."""
    given = [k for k in _TARGETS if getattr(create, k) is not None]
    if len(given) != 1:
        what = " and ".join(given) if given else "none"
        raise invalid(
            f"give exactly one of template, agent or workflow (got {what})",
            param=given[1] if len(given) > 1 else "template",
        )
    kind = given[0]
    options: dict[str, Any] = {
        k: getattr(create, k) for k in _OPTIONS if getattr(create, k) is not None
    }
    try:
        spec = BatchSpec(
            kind=kind,
            model=create.model,
            options=BatchOptions.model_validate(options),
            key_id=key_id,
            **{kind: getattr(create, kind)},
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        param = "model" if "model" in message else kind
        raise invalid(f"{param}: {message}", param=param) from None
    if create.model is not None:
        try:
            ctx.client.model(create.model)
        except ArborError as exc:
            raise invalid(f"model: {exc}", param="model") from None
    batches = ctx.batches
    assert batches is not None
    try:
        await batches.service.runner(spec)
    except NotFoundError as exc:
        raise invalid(f"{kind}: {exc}", param=kind) from None
    except ArborError as exc:  # a template that does not parse, an agent that cannot build
        raise invalid(f"{kind}: {exc}", param=kind) from None
    return spec


def _format(name: str, given: DatasetFormat | None) -> DatasetFormat:
    if given is not None:
        return given
    suffix = Path(name).suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise invalid(
        f"format: cannot tell the format of {name!r}; name it .jsonl or .csv or set format",
        param="format",
    )


def _dataset_path(ctx: ServiceContext, name: str) -> Path:
    """``name`` under the datasets directory; refused when it escapes it or is missing."""
    base = datasets_dir(ctx).resolve()
    if "\x00" in name:
        raise invalid("dataset: not a valid path", param="dataset")
    path = (base / name).resolve()
    if not path.is_relative_to(base) or path == base:
        raise invalid("dataset: must be a file under ARBOR_HOME/datasets", param="dataset")
    if not path.is_file():
        raise invalid(f"dataset: no file {name!r} under ARBOR_HOME/datasets", param="dataset")
    return path


def _checked_rows(path: Path, fmt: DatasetFormat | None, *, param: str) -> Iterator[NewItem]:
    """The file's rows; the first one is read now, so an unreadable file or CSV header,
    or an empty dataset, is refused before anything is stored."""
    try:
        rows = read_dataset(path, fmt)
        first = next(rows, None)
    except DatasetError as exc:
        message = str(exc).replace(str(path), path.name)
        raise invalid(f"{param}: {message}", param=param) from None
    if first is None:
        raise invalid(f"{param}: the dataset has no rows", param=param)
    chained: Iterable[NewItem] = itertools.chain([first], rows)
    return iter(chained)
