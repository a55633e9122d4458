"""SSEDecoder: event framing of text/event-stream bodies."""

import pytest

STREAM = (
    b": ping\n"
    b"\n"
    b"data: {\"a\": 1}\n"
    b"\n"
    b"event: message\n"
    b"id: 7\n"
    b"data: {\"b\": 2}\n"
    b"\n"
    b"\n"
    b": ping - 2024-01-01 00:00:00\n"
    b"data:[DONE]\n"
    b"\n"
)
EXPECTED = ['{"a": 1}', '{"b": 2}', "[DONE]"]


def test_decoder_whole_stream(bench):
    decoder = bench.SSEDecoder()
    assert decoder.feed(STREAM) == EXPECTED
    assert decoder.finish() == []


@pytest.mark.parametrize("newline", [b"\r\n", b"\r"])
def test_decoder_other_line_endings(bench, newline):
    decoder = bench.SSEDecoder()
    assert decoder.feed(STREAM.replace(b"\n", newline)) + decoder.finish() == EXPECTED


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_decoder_byte_by_byte(bench, newline):
    decoder = bench.SSEDecoder()
    payloads = []
    for byte in STREAM.replace(b"\n", newline):
        payloads += decoder.feed(bytes([byte]))
    payloads += decoder.finish()
    assert payloads == EXPECTED


def test_decoder_crlf_split_between_chunks(bench):
    decoder = bench.SSEDecoder()
    assert decoder.feed(b"data: x\r") == []
    assert decoder.feed(b"\n\r") == ["x"]
    assert decoder.feed(b"\ndata: y\r\n\r\n") == ["y"]


def test_decoder_multiline_data(bench):
    decoder = bench.SSEDecoder()
    assert decoder.feed(b"data: first\ndata: second\n\n") == ["first\nsecond"]


def test_decoder_comments_only(bench):
    decoder = bench.SSEDecoder()
    assert decoder.feed(b": ping\n\n: ping\n\n\n") == []
    assert decoder.finish() == []


def test_decoder_flushes_unterminated_event(bench):
    decoder = bench.SSEDecoder()
    assert decoder.feed(b"data: {\"a\": 1}\n\ndata: tail") == ['{"a": 1}']
    assert decoder.finish() == ["tail"]


def test_decoder_utf8_split_inside_character(bench):
    decoder = bench.SSEDecoder()
    encoded = "data: caf\u00e9\n\n".encode()
    split = encoded.index(b"\xc3") + 1
    assert decoder.feed(encoded[:split]) == []
    assert decoder.feed(encoded[split:]) == ["caf\u00e9"]
