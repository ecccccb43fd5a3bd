"""cepr.llm.lora.gguf_string: one header field read without parsing the whole file, as gguf's reader gives it."""

from __future__ import annotations

import pytest

from cepr.errors import CeprError


def test_header_fields_are_what_ggufs_reader_reads(tiny_llm):
    gguf = pytest.importorskip("gguf")
    from cepr.llm.lora import SHIPPED_LORAS, adapter_path, gguf_string

    files = sorted(tiny_llm["dir"].glob("*.gguf")) + [adapter_path(n) for n in SHIPPED_LORAS]
    assert len(files) >= 3
    for path in files:
        fields = gguf.GGUFReader(str(path)).fields
        for key in ("general.architecture", "general.name", "general.type", "no.such.key"):
            want = fields[key].contents() if key in fields else None
            assert gguf_string(path, key) == want, (path.name, key)


def test_a_file_that_is_not_gguf_is_named(tmp_path):
    from cepr.llm.lora import gguf_string

    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"NOPE" + bytes(20))
    with pytest.raises(CeprError, match="not a GGUF file"):
        gguf_string(bad, "general.architecture")
    bad.write_bytes(b"GGUF" + bytes(6))
    with pytest.raises(CeprError, match="ends early"):
        gguf_string(bad, "general.architecture")
