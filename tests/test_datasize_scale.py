"""Data sizing in O(bytes): structural counts agree with the record reader, samples are the reader's
records with their lines, measurements are cached by file and tokenizer, declared sizes skip reading."""

import json
import random

import pytest

from recipe_ft.compiler import datacache, datacount, datasize, records
from recipe_ft.compiler.pipeline import compile_file
from recipe_ft.schemas.errors import RecipeError

CHAT = {"messages": [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hi"}]}


def chat(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"question {i} " + "word " * (i % 13)},
                         {"role": "assistant", "content": f"answer {i}"}]}


def recipe_text(extra_data: str = "") -> str:
    return ("task: chat\nmodel:\n  base: meta-llama/Meta-Llama-3-8B-Instruct\ndata:\n  train: train.jsonl\n"
            f"{extra_data}method:\n  name: qlora\ntraining:\n  max_seq_len: 1024\n  batch_size: 16\n"
            "budget:\n  gpu: L4\n")


def reader_records(path):
    return [(n, row) for n, row, error in records.raw(path, path.name) if error is None]



def test_the_hashing_thread_ends_when_the_scan_fails(tmp_path, monkeypatch):
    """The sha256 runs in a second thread beside the count: a scan that stops with an error stops it too."""
    import threading

    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(chat(i)) for i in range(50)) + "\n")
    monkeypatch.setattr(datacount, "BLOCK", 64)

    def broken(line):
        raise OSError("disk gone")

    monkeypatch.setattr(datacount.records, "blank", broken)
    with pytest.raises(OSError, match="disk gone"):
        datacount.jsonl(path, sample=5)
    assert not [t for t in threading.enumerate() if t.name == "recipe-sha256"]

@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("block", [5, 64, 1 << 22])
def test_jsonl_count_and_sample_agree_with_the_reader(tmp_path, monkeypatch, seed, block):
    monkeypatch.setattr(datacount, "BLOCK", block)
    rng = random.Random(seed)
    lines = []
    for i in range(rng.randint(1, 60)):
        lines.append(rng.choice(["", "   ", "\t", "\r"]) if rng.random() < 0.2 else json.dumps(chat(i)))
    eol = rng.choice(["\n", "\r\n"])
    text = eol.join(lines) + rng.choice(["", eol, eol + eol, eol + "  "])
    path = tmp_path / "d.jsonl"
    path.write_text(text)
    expected = reader_records(path)
    scan = datacount.jsonl(path, sample=rng.randint(1, 30))
    assert scan.count == len(expected)
    assert scan.digest == datacache.file_sha256(path)
    by_line = dict(expected)
    assert scan.rows, "a non-empty file gives a sample"
    for lineno, row, error in scan.rows:
        assert error is None and by_line[lineno] == row  # the reader's record at that line
    assert [r[0] for r in scan.rows] == sorted({r[0] for r in scan.rows})  # in file order, no repeats


# Lines that start with whitespace but hold a record, blank lines of every kind of whitespace, runs of
# them, CRLF: the counting pass only looks closer where a line starts with whitespace.
EDGES = [json.dumps(CHAT), "", "", "  " + json.dumps(chat(1)), "\t", json.dumps(chat(2)), " \r", "\x0b",
         "\x0c ", "\r", json.dumps(chat(3)), "\t" + json.dumps(chat(4)), "", json.dumps(chat(5)),
         "\r" + json.dumps(chat(6)), "   ", json.dumps(chat(7))]


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
@pytest.mark.parametrize("end", ["none", "eol", "blank line", "spaces"])
@pytest.mark.parametrize("short_line", [0, 10 ** 9])  # lines counted by one findall / by count + search
def test_jsonl_count_at_every_block_and_piece_boundary(tmp_path, monkeypatch, eol, end, short_line):
    """Every block size from one byte to the whole file (a block boundary at every position: inside a
    line, at a newline, between two blank lines), counting pieces of 1, 3 and 16 bytes, both ways of
    counting: the count is the reader's, for blank and whitespace-led lines, CRLF, every kind of file end."""
    monkeypatch.setattr(datacount, "SHORT_LINE", short_line)
    path = tmp_path / "d.jsonl"
    last = {"none": "", "eol": eol, "blank line": eol + eol, "spaces": eol + "  "}[end]
    path.write_bytes((eol.join(EDGES) + last).encode())
    expected = len(reader_records(path))
    assert expected == 8
    size = path.stat().st_size
    for piece in (1, 3, 16):
        monkeypatch.setattr(datacount, "PIECE", piece)
        for block in [*range(1, 80), *range(size - 40, size + 2)]:
            monkeypatch.setattr(datacount, "BLOCK", block)
            assert datacount.jsonl(path, sample=3, hash_it=False).count == expected, (piece, block)


@pytest.mark.parametrize("text, records_", [
    ("\n\n\n", 0), ("  \n\t\n", 0), ("{}", 1), ("{}\n", 1), ("\n{}", 1), (" {}", 1), ("{}\n ", 1),
    ("{}\r\n\r\n{}\r\n", 2), ("{}\n\n{}", 2), ("\n \n{}\n \n", 1), ("{}\n" * 5, 5),
])
@pytest.mark.parametrize("block", [1, 2, 4, 1 << 22])
@pytest.mark.parametrize("short_line", [0, 10 ** 9])
def test_jsonl_count_of_small_files(tmp_path, monkeypatch, text, records_, block, short_line):
    """Files smaller than one block, of exactly one block, and split at every byte."""
    monkeypatch.setattr(datacount, "BLOCK", block)
    monkeypatch.setattr(datacount, "SHORT_LINE", short_line)
    path = tmp_path / "d.jsonl"
    path.write_text(text, newline="")
    scan = datacount.jsonl(path, sample=4)
    assert scan.count == records_ == len(reader_records(path))
    assert scan.digest == datacache.file_sha256(path)


def test_jsonl_count_of_a_file_of_exactly_one_block(tmp_path, monkeypatch):
    line = json.dumps(CHAT).encode() + b"\n"
    path = tmp_path / "d.jsonl"
    path.write_bytes(line * 3 + b"\n" + line)  # the last byte of the block is the last newline
    for block in (path.stat().st_size, len(line) * 3 + 1, len(line)):
        monkeypatch.setattr(datacount, "BLOCK", block)
        assert datacount.jsonl(path, sample=2).count == 4


def test_jsonl_short_and_long_lines_are_counted_each_their_way(tmp_path, monkeypatch):
    """Blocks of short lines are counted with bytes.count and a search, blocks of long ones with one
    findall: a file with both, and blank lines in both, gives the reader's count."""
    real, ways = datacount._newlines, []

    def spy(block, a, b, end, short):
        ways.append(short)
        return real(block, a, b, end, short)

    monkeypatch.setattr(datacount, "_newlines", spy)
    monkeypatch.setattr(datacount, "BLOCK", 4096)
    short = ["{}", "", "[1]", "  ", "{}"] * 400
    long_ = [json.dumps({"t": "x" * 300}), "", " " + json.dumps({"t": "y" * 200}), "\t"] * 40
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(short + long_ + short) + "\n")
    assert datacount.jsonl(path, sample=5, hash_it=False).count == len(reader_records(path)) == 2480
    assert True in ways and False in ways


def test_jsonl_sample_spreads_over_the_file_and_reports_bad_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(chat(i)) for i in range(10_000)]
    lines[7_000] = "{not json"
    path.write_text("\n".join(lines) + "\n")
    scan = datacount.jsonl(path, sample=10_000)  # one offset per line on average
    numbers = [r[0] for r in scan.rows]
    assert numbers[0] == 1 and numbers[-1] > 9_000 and len(numbers) > 5_000
    assert (7_001, None) in [(n, row) for n, row, _ in scan.rows]
    assert any(error.startswith("invalid JSON") for n, _, error in scan.rows if n == 7_001)


def test_csv_count_handles_quoted_newlines_and_blank_rows(tmp_path):
    path = tmp_path / "d.csv"
    rows = ['q,a'] + [f'"line one\nline two {i}","answer, {i}"' if i % 3 == 0 else f"q{i},a{i}" for i in range(50)]
    rows.insert(10, "")
    rows.append("x,y,z")  # more fields than the header
    path.write_text("\n".join(rows) + "\n")
    expected = list(records.raw(path, path.name))
    scan = datacount.csv_rows(path, path.name, sample=7)
    assert scan.count == len(expected) == 51
    by_line = {n: (row, error) for n, row, error in expected}
    assert 1 <= len(scan.rows) <= 14
    for lineno, row, error in scan.rows:
        assert by_line[lineno] == (row, error)


def test_parquet_count_from_metadata(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    path = tmp_path / "d.parquet"
    table = pa.table({"text": [f"row {i}" for i in range(1000)]})
    pq.write_table(table, path, row_group_size=64)
    scan = datacount.parquet(path, path.name, sample=40)
    assert scan.count == 1000
    assert 16 <= len(scan.rows) <= 64
    assert all(row == {"text": f"row {n - 1}"} for n, row, _ in scan.rows)
    assert len({n for n, _, _ in scan.rows}) == len(scan.rows) and max(n for n, _, _ in scan.rows) > 900


def write_data(tmp_path, n: int, bad_at=None):
    lines = [json.dumps(chat(i)) for i in range(n)]
    if bad_at is not None:
        lines[bad_at] = "{oops"
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    path = tmp_path / "r.yaml"
    path.write_text(recipe_text())
    return path


def test_large_files_are_sampled_small_files_checked_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(datasize, "FULL_CHECK_BYTES", 1000)
    monkeypatch.setattr(datasize, "SAMPLE_ROWS", 50)
    recipe = write_data(tmp_path, 3000, bad_at=1234)  # not on a sampled line
    plan = compile_file(str(recipe)).plan
    assert plan.data.examples == 3000
    assert "checks every record" in plan.data.note

    monkeypatch.setattr(datasize, "FULL_CHECK_BYTES", 10 << 20)  # the same file, checked whole: refused
    (tmp_path / "train.jsonl").touch()
    with pytest.raises(RecipeError, match=r"train.jsonl:1235: invalid JSON"):
        compile_file(str(recipe))


def test_a_bad_record_in_the_sample_refuses_the_plan(tmp_path, monkeypatch):
    monkeypatch.setattr(datasize, "FULL_CHECK_BYTES", 1000)
    monkeypatch.setattr(datasize, "SAMPLE_ROWS", 6000)  # more offsets than lines: every line sampled
    recipe = write_data(tmp_path, 3000, bad_at=2000)  # past the 1000 records `recipe validate` reads
    with pytest.raises(RecipeError, match=r"train.jsonl:2001: invalid JSON.*\n.*sample of 2,9\d\d of 3,000 lines"):
        compile_file(str(recipe))


def test_measurement_is_cached_by_file_and_tokenizer(tmp_path, monkeypatch):
    monkeypatch.setenv("RECIPE_CACHE_DIR", str(tmp_path / "cache"))
    recipe = write_data(tmp_path, 40)
    first = compile_file(str(recipe)).plan
    reads = []
    real_raw = records.raw
    monkeypatch.setattr(records, "raw", lambda *a: reads.append(a) or real_raw(*a))
    real_digest = datacache.hashlib.sha256
    hashed = []
    monkeypatch.setattr(datacache.hashlib, "sha256", lambda *a: hashed.append(a) or real_digest(*a))
    checked = []
    real_check = datasize._check
    monkeypatch.setattr(datasize, "_check", lambda *a: checked.append(a) or real_check(*a))
    again = compile_file(str(recipe)).plan
    assert again.data == first.data and not checked
    assert len(reads) == 1  # `recipe validate`'s first records only
    assert not [a for a in hashed if not a]  # no file hashed again (the key hash has an argument)
    assert again.lock.data_sha256 == first.lock.data_sha256 == {"train.jsonl": datacache.file_sha256(tmp_path / "train.jsonl")}

    with (tmp_path / "train.jsonl").open("a") as f:  # an edit: counted again
        f.write(json.dumps(CHAT) + "\n")
    edited = compile_file(str(recipe)).plan
    assert edited.data.examples == 41 and checked
    assert edited.lock.data_sha256["train.jsonl"] == datacache.file_sha256(tmp_path / "train.jsonl")


def test_tokenizer_change_invalidates(tmp_path, monkeypatch):
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    monkeypatch.setenv("RECIPE_CACHE_DIR", str(tmp_path / "cache"))
    model = tmp_path / "m"
    model.mkdir()

    def save(vocab):
        tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace() if len(vocab) > 1 else pre_tokenizers.Split("", "isolated")
        tok.save(str(model / "tokenizer.json"))

    (tmp_path / "d.jsonl").write_text(json.dumps(CHAT) + "\n")
    from recipe_ft.schemas.recipe import Recipe

    r = Recipe.model_validate({"task": "chat", "model": {"base": "m"}, "data": {"train": "d.jsonl"}})
    save({"[UNK]": 0, "hello": 1, "there": 2, "hi": 3})
    words = datasize.count_file(r, tmp_path / "d.jsonl", model).lengths
    save({"[UNK]": 0})
    chars = datasize.count_file(r, tmp_path / "d.jsonl", model).lengths
    assert words == [3 + 2 * 5 + 8] and chars[0] > words[0]


def test_declared_sizes_skip_reading(tmp_path, monkeypatch):
    (tmp_path / "train.jsonl").write_text("{not even json\n")
    path = tmp_path / "r.yaml"
    path.write_text(recipe_text("  examples: 1000000\n  tokens_per_example: 300\n"))
    monkeypatch.setattr(datasize, "count_file", lambda *a, **k: pytest.fail("read the data file"))
    plan = compile_file(str(path)).plan
    assert plan.data.examples == 1_000_000 and plan.data.tokens_per_example == 300


def test_declared_tokens_skip_tokenizing(tmp_path, monkeypatch):
    write_data(tmp_path, 30)
    (tmp_path / "r.yaml").write_text(recipe_text("  tokens_per_example: 300\n"))
    monkeypatch.setattr(datasize, "_tokenizer", lambda *a: pytest.fail("loaded a tokenizer"))
    monkeypatch.setattr(datasize, "example_text", lambda *a: pytest.fail("measured a record"))
    plan = compile_file(str(tmp_path / "r.yaml")).plan
    assert plan.data.examples == 30 and plan.data.tokens_per_example == 300


def test_padding_is_simulated_once_per_micro_batch(monkeypatch):
    size = datasize.DataSize(1000, 100.0, "heuristic", lengths=tuple(range(10, 300)), max_len=512)
    made = []
    real = datasize.random.Random
    monkeypatch.setattr(datasize.random, "Random", lambda seed: made.append(seed) or real(seed))
    values = [size.padded_tokens_per_example(m) for m in (2, 4, 2, 4, 8, 2)]
    assert values[0] == values[2] == values[5] and values[1] == values[3]
    assert len(made) == 3


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_sampled_path_for_each_format(tmp_path, monkeypatch, suffix):
    from recipe_ft.schemas.recipe import Recipe

    monkeypatch.setattr(datasize, "FULL_CHECK_BYTES", 0)  # every file takes the O(bytes) path
    monkeypatch.setattr(datasize, "SAMPLE_ROWS", 50)
    rows = [{"prompt": f"q{i}\nsecond line", "completion": f" a{i}"} for i in range(500)]
    path = tmp_path / f"d{suffix}"
    if suffix == ".csv":
        import csv

        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, ["prompt", "completion"])
            w.writeheader()
            w.writerows(rows)
    elif suffix == ".parquet":
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=100)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = Recipe.model_validate({"task": "generation", "model": {"base": "meta-llama/Meta-Llama-3-8B-Instruct"},
                               "data": {"train": path.name, "format": "prompt_completion"}})
    counted = datasize.count_file(r, path, None)
    assert counted.count == 500 and not counted.complete and 40 <= counted.checked <= 100
    assert len(counted.lengths) == counted.checked and all(n > 8 for n in counted.lengths)
