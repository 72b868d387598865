"""A multipart form read as it arrives: its small fields first, then one file passed on chunk by chunk.

Starlette's form parser spools a file to disk before the handler sees any field, so the CSRF
token of an upload would be checked only after gigabytes were written. This reader hands over the
fields that come before the file (browsers send a form's fields in the page's order, so the token
and the image's name come first), and then the file's bytes as they come, never held whole.
Parsing is python-multipart's, the parser Starlette itself uses.
"""

from __future__ import annotations

from typing import AsyncIterator

from python_multipart.multipart import MultipartParser, parse_options_header

__all__ = ["FormError", "StreamedForm"]

#: a field before the file is a name or a token, never more; with python-multipart's own caps on
#: a part's headers, these bound what is read before the file's token check
_FIELD_BYTES = 4096
_FIELDS = 16


class FormError(Exception):
    """A form this reader does not take; ``field`` names the part at fault, if one is."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class StreamedForm:
    """The multipart/form-data body ``chunks`` with ``content_type``, whose one file part is ``file_field``."""

    def __init__(self, content_type: str, chunks: AsyncIterator[bytes], file_field: str) -> None:
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise FormError("the form must be sent as multipart/form-data")
        self._chunks = chunks
        self._file_field = file_field
        self.fields: dict[str, str] = {}
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._part: str | None = None
        self._value = bytearray()
        self._in_file = False
        self._file_ended = False
        self._file_data: list[bytes] = []
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value_data, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
            "on_part_end": self._part_end})

    async def read_fields(self) -> None:
        """Read up to the file's start, filling ``fields``; ``FormError`` if no file follows them."""
        while not self._in_file:
            chunk = await anext(self._chunks, None)
            if chunk is None:
                raise FormError("no file was sent", self._file_field)
            self._feed(chunk)

    async def file(self) -> AsyncIterator[bytes]:
        """The file's bytes as they arrive; ``FormError`` if the body ends inside it."""
        while True:
            while self._file_data:
                yield self._file_data.pop(0)
            if self._file_ended:
                return
            chunk = await anext(self._chunks, None)
            if chunk is None:
                raise FormError("the form ended before its file did", self._file_field)
            self._feed(chunk)

    def _feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except FormError:
            raise
        except Exception as exc:  # python-multipart's own parse errors
            raise FormError(f"the form is not valid multipart/form-data: {exc}") from None

    def _part_begin(self) -> None:
        self._headers.clear()
        self._value.clear()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[bytes(self._header_name).lower()] = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if self._file_ended:
            raise FormError("the file must be the form's last field", name or None)
        if name == self._file_field:
            self._in_file = True
        elif len(self.fields) >= _FIELDS:
            raise FormError(f"the form has more than {_FIELDS} fields")
        self._part = name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._file_data.append(bytes(data[start:end]))
            return
        self._value += data[start:end]
        if len(self._value) > _FIELD_BYTES:
            raise FormError(f"the field is longer than {_FIELD_BYTES} bytes", self._part)

    def _part_end(self) -> None:
        if self._in_file:
            self._file_ended = True
        elif self._part is not None:
            self.fields[self._part] = self._value.decode("utf-8", "replace")
