"""Sidecar loading: path matching order, JSONL/CSV, caption text fields vs catalog fields, bad lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.metadata import Sidecar, caption_text, join_sentences, sanitize_key
from rag.config import shared_data_dir
from rag.errors import MmragError

SHARED = shared_data_dir()
SAMPLE = SHARED / "retrieval" / "metadata.jsonl"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "catalog" / "metadata.jsonl"  # in the repo


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_match_by_path_relative_to_sidecar_folder(tmp_path: Path) -> None:
    side = write_jsonl(tmp_path / "cat.jsonl", [
        {"file": "images/a.jpg", "title": "Alpha"},
        {"file": "./images/sub/b.jpg", "title": "Beta"},
        {"file": "images\\c.jpg", "title": "Gamma"},
    ])
    sidecar = Sidecar.load(side)
    assert sidecar.caption_text(tmp_path / "images" / "a.jpg") == "Alpha."
    assert sidecar.caption_text(tmp_path / "images" / "sub" / "b.jpg") == "Beta."
    assert sidecar.caption_text(tmp_path / "images" / "c.jpg") == "Gamma."
    assert sidecar.lookup(tmp_path / "other" / "zzz.jpg") is None


def test_match_order_sidecar_then_root_then_basename(tmp_path: Path) -> None:
    root = tmp_path / "x"
    image = root / "a.jpg"
    both = Sidecar.load(write_jsonl(tmp_path / "s1.jsonl", [
        {"file": "a.jpg", "title": "relative to root"},
        {"file": "x/a.jpg", "title": "relative to sidecar"},
    ]))
    assert both.caption_text(image, root) == "relative to sidecar."
    # a path relative to root (as the pipeline may pass it) resolves the same way
    assert both.caption_text(Path("a.jpg"), root) == "relative to sidecar."

    root_only = Sidecar.load(write_jsonl(tmp_path / "meta" / "s2.jsonl", [
        {"file": "deep/a.jpg", "title": "by root"},
        {"file": "elsewhere/a.jpg", "title": "other a"},
    ]))
    deep = root / "deep" / "a.jpg"
    assert root_only.caption_text(deep, root) == "by root."
    assert root_only.caption_text(deep) == ""  # basename 'a.jpg' is ambiguous without root

    by_name = Sidecar.load(write_jsonl(tmp_path / "meta" / "s3.jsonl", [{"file": "flat/b.png", "title": "Bee"}]))
    assert by_name.caption_text(root / "nested" / "b.png", root) == "Bee."
    assert by_name.caption_text(root / "nested" / "c.png", root) == ""


def test_lists_joined_as_sentences_without_duplicates(tmp_path: Path) -> None:
    sidecar = Sidecar.load(write_jsonl(tmp_path / "c.jsonl", [{
        "path": "p.jpg",
        "description": "Shot in daylight",
        "captions": ["A red shoe", "a red shoe.", "  A  shoe on a table! "],
        "title": "Shoe",
        "keywords": ["leather", "red", "leather"],
        "alt_text": "Red shoe",
    }]))
    assert sidecar.caption_text(tmp_path / "p.jpg") == (
        "Shoe. Red shoe. A red shoe. A shoe on a table! Shot in daylight. tags: leather, red."
    )


def test_csv_sidecar(tmp_path: Path) -> None:
    side = tmp_path / "cat.csv"
    side.write_text(
        "filename,title,tags,captions,price,in_stock,sku,license\n"
        'a.jpg,Boot,"brown; suede | winter","[""A boot"", ""A brown boot""]",19.5,true,0042,CC BY\n'
        'b.jpg,"Multi\nline",,,3,FALSE,x1,\n'
        "c.jpg,too,many,cells,1,2,3,4,5\n"
        "d.jpg,short\n",
        encoding="utf-8",
    )
    sidecar = Sidecar.load(side)
    assert sidecar.caption_text(tmp_path / "a.jpg") == "Boot. A boot. A brown boot. tags: brown, suede, winter."
    assert sidecar.catalog_fields(tmp_path / "a.jpg") == {
        "price": 19.5, "in_stock": True, "sku": "0042", "license": "CC BY",
    }
    assert sidecar.caption_text(tmp_path / "b.jpg") == "Multi line."
    assert sidecar.catalog_fields(tmp_path / "b.jpg") == {"price": 3, "in_stock": False, "sku": "x1"}
    assert sidecar.lookup(tmp_path / "c.jpg") is None and sidecar.lookup(tmp_path / "d.jpg") is None
    assert len(sidecar.problems) == 2
    assert sidecar.problems[0].startswith("cat.csv line 5:") and "9 cells for 8 columns" in sidecar.problems[0]
    assert sidecar.problems[1].startswith("cat.csv line 6:")


def test_malformed_lines_reported_and_skipped(tmp_path: Path) -> None:
    side = write_jsonl(tmp_path / "m.jsonl", [
        {"file": "ok1.jpg", "title": "One"},
        '{"file": "broken.jpg", "title": ',
        "",
        '["not", "an", "object"]',
        {"title": "no path"},
        {"file": "ok1.jpg", "title": "duplicate"},
        {"file": "ok2.jpg", "caption": "Two"},
    ])
    sidecar = Sidecar.load(side)
    assert set(sidecar.rows) == {"ok1.jpg", "ok2.jpg"}
    assert sidecar.caption_text(tmp_path / "ok1.jpg") == "One."
    lines = [p.split(":")[0] for p in sidecar.problems]
    assert lines == ["m.jsonl line 2", "m.jsonl line 4", "m.jsonl line 5", "m.jsonl line 6"]
    assert "invalid JSON" in sidecar.problems[0] and "duplicate" in sidecar.problems[3]


def test_missing_or_unusable_sidecar_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(MmragError, match="not found") as info:
        Sidecar.load(tmp_path / "nope.jsonl")
    assert "\n" not in str(info.value)
    (tmp_path / "nopath.csv").write_text("title,tags\nA,b\n", encoding="utf-8")
    with pytest.raises(MmragError, match="no image path column"):
        Sidecar.load(tmp_path / "nopath.csv")
    (tmp_path / "latin.jsonl").write_bytes(b'{"file": "a.jpg", "title": "caf\xe9"}\n')
    with pytest.raises(MmragError, match="not UTF-8"):
        Sidecar.load(tmp_path / "latin.jsonl")


def test_catalog_fields_scalars_only_sanitized_and_reserved(tmp_path: Path) -> None:
    sidecar = Sidecar.load(write_jsonl(tmp_path / "f.jsonl", [{
        "file": "a.jpg", "title": "T", "captions": ["c"], "tags": "t", "categories": ["zebra"],
        "category_counts": {"zebra": 1}, "size": [1, 2], "none": None,
        "id": 7, "Text": "x", "doc_id": "d", "my field-name": "v", "2nd": 2.5, "ok": False, "source": "coco2017", "folder": "f",
    }]))
    assert sidecar.catalog_fields(tmp_path / "a.jpg") == {
        "meta_id": 7, "meta_Text": "x", "meta_doc_id": "d", "my_field_name": "v", "_2nd": 2.5, "ok": False,
        "source": "coco2017", "meta_folder": "f",
    }
    assert sidecar.catalog_fields(tmp_path / "missing.jpg") == {}
    assert sanitize_key("path") == "meta_path" and sanitize_key("a.b") == "a_b" and sanitize_key("") == ""


def test_categories_never_become_caption_text(tmp_path: Path) -> None:
    row = {"file": "a.jpg", "caption": "A horse in a field", "categories": ["zebra", "giraffe"], "label": "okapi"}
    text = caption_text(row)
    assert text == "A horse in a field."
    assert not {"zebra", "giraffe", "okapi"} & set(text.lower().replace(".", "").split())


@pytest.mark.parametrize("sample", [
    pytest.param(SAMPLE, id="full", marks=pytest.mark.skipif(not SAMPLE.is_file(), reason=f"full sample set not found at {SAMPLE}")),
    pytest.param(EXAMPLE, id="examples-catalog"),
])  # fmt: skip
def test_sample_catalog_captions_and_no_categories(sample: Path) -> None:
    sidecar = Sidecar.load(sample)
    rows = [json.loads(line) for line in sample.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert sidecar.problems == [] and len(sidecar.rows) == len(rows)
    leaked = checked = 0
    for row in rows:
        image = sample.parent / row["file"]
        text = sidecar.caption_text(image)
        expected: dict[str, str] = {}  # "A. B. C.": one sentence per distinct caption, in catalog order
        for cap in row["captions"]:
            sentence = " ".join(cap.split()).rstrip(". ")
            expected.setdefault(sentence.rstrip("!?").casefold(), sentence if sentence[-1] in "!?" else sentence + ".")
        assert text == " ".join(expected.values())
        assert text == join_sentences(row["captions"])
        fields = sidecar.catalog_fields(image)
        assert fields["source"] == row["source"] and "categories" not in fields and "captions" not in fields
        words = set(text.lower().replace(".", " ").replace(",", " ").split())
        for category in row["categories"]:
            if not any(category.lower() in c.lower() for c in row["captions"]):
                checked += 1
                leaked += category.lower() in words
    assert checked > 100 and leaked == 0


def test_json_array_sidecar(tmp_path: Path) -> None:
    side = tmp_path / "cat.json"
    side.write_text(json.dumps([{"image": "a.jpg", "alt": "An apple"}, 3, {"title": "no path"}], indent=1))
    sidecar = Sidecar.load(side)
    assert sidecar.caption_text(tmp_path / "a.jpg") == "An apple."
    assert sidecar.problems == [
        "cat.json entry 2: expected a JSON object, got int; skipped",
        "cat.json entry 3: no image path (expected one of file, path, filename, image); skipped",
    ]
