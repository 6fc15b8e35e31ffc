"""Content hashes of locally built images: the same content gives the same tag wherever it was
installed from (a wheel file, an index, another venv), so a rebuilt checkout reuses its images."""

from __future__ import annotations

from pathlib import PurePosixPath

from appliance.runtime import images as I


def test_install_records_and_bytecode_are_not_content():
    for path in ["xllamacpp-1.dist-info/REQUESTED", "xllamacpp-1.dist-info/direct_url.json",
                 "xllamacpp-1.dist-info/INSTALLER", "xllamacpp-1.dist-info/RECORD",
                 "xllamacpp/__pycache__/__init__.cpython-311.pyc", "../../../bin/some-script"]:
        assert I._install_only(PurePosixPath(path)), path
    for path in ["xllamacpp-1.dist-info/METADATA", "xllamacpp/__init__.py", "xllamacpp/xllamacpp.abi3.so",
                 "xllamacpp.libs/libgomp-a34b3233.so.1"]:
        assert not I._install_only(PurePosixPath(path)), path


def test_the_engine_images_identity_lines_name_the_carried_wheel():
    files, ident = I.carried_files("engines/llamacpp")
    assert ident[0].startswith("xllamacpp 2026.10.11549 ")
    carried = {arc for _, arc in files}
    assert not any(arc.endswith(("/REQUESTED", "/direct_url.json", "/RECORD", ".pyc")) for arc in carried)
    assert any(arc.endswith(".dist-info/METADATA") for arc in carried)
