"""Data for generative models: conversations (OpenAI chat, ShareGPT, alpaca), plain text for
continued pre-training, and preference pairs (prompt/chosen/rejected, ShareGPT pairs).

    ds = read_generative("chat.jsonl")     # DataError (with the line) when a record is unusable
    ds.kind                                 # "chat" | "plain" | "preference"

Every record keeps the line it starts on in the file (JSON arrays too, not their index), so
a report can say "line 17". Record-level problems (a bad role, an empty turn, no assistant turn,
turns out of order) are all collected and raised together, at most MAX_ISSUES of them.

| code              | severity | meaning                                                             |
|-------------------|----------|---------------------------------------------------------------------|
| unknown_format    | error    | records have none of the known shapes (messages, conversations...)  |
| missing_field     | error    | a record lacks a field its format needs (output, chosen...)        |
| bad_role          | error    | a role that is not system/user/assistant (ShareGPT: human/gpt)      |
| empty_turn        | error    | a turn (or chosen/rejected answer) with no text                     |
| role_order        | error    | system not first, or user/assistant turns that do not alternate     |
| no_assistant_turn | error    | a conversation without an assistant turn: nothing to learn from     |
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .encoding import decode
from .errors import DataError, Issue, error
from .readers import DataLimits, read_bytes
from .structured import json_limits

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant"}
FORMATS = ("openai-chat", "sharegpt", "alpaca", "plain", "preference", "sharegpt-preference")
KIND_OF = {"openai-chat": "chat", "sharegpt": "chat", "alpaca": "chat", "plain": "plain",
           "preference": "preference", "sharegpt-preference": "preference"}
MAX_ISSUES = 50
_FIX_JSON = "Check the file with a JSON validator (e.g. `python -m json.tool FILE`) and fix the syntax."
# JSON's blanks between records: one character class, matched in C (a Python loop over a file of
# spaces took a second per 5 MB, holding the GIL in slices the whole time).
_BLANKS = re.compile(r"[ \t\r\n]*")


@dataclass(frozen=True)
class Message:
    role: str             # system | user | assistant | text (plain documents)
    content: str
    train: bool = True    # assistant turns only; OpenAI's "weight": 0 turns it off


@dataclass
class Conversation:
    messages: list[Message]
    line: int

    def key(self) -> str:
        return json.dumps([(m.role, " ".join(m.content.split())) for m in self.messages])


@dataclass
class PreferencePair:
    prompt: list[Message]
    chosen: str
    rejected: str
    line: int

    def key(self) -> str:
        return json.dumps([[(m.role, m.content) for m in self.prompt], self.chosen, self.rejected])


@dataclass
class GenerativeDataset:
    kind: str                       # chat | plain | preference
    format: str                     # one of FORMATS
    examples: list = field(default_factory=list)   # Conversation or PreferencePair
    source: str = ""
    sha256: str = ""
    encoding: str = ""

    def __len__(self) -> int:
        return len(self.examples)

    def subset(self, indices) -> "GenerativeDataset":
        return GenerativeDataset(self.kind, self.format, [self.examples[i] for i in indices], self.source,
                                 self.sha256, self.encoding)


def detect_format(record) -> str | None:
    """Which generative format a record has, or None (e.g. a text+label classification row)."""
    if not isinstance(record, dict):
        return None
    keys = set(record)
    if "chosen" in keys and "rejected" in keys:
        return "sharegpt-preference" if "conversations" in keys else "preference"
    if "messages" in keys:
        return "openai-chat"
    if "conversations" in keys:
        return "sharegpt"
    if "instruction" in keys and ("output" in keys or "response" in keys):
        return "alpaca"
    if keys == {"text"} or (keys >= {"text"} and not keys & {"label", "labels", "category", "class"}):
        return "plain"
    return None


def sniff_file(path: Path, limits: DataLimits | None = None) -> str | None:
    """The generative format of a JSON/JSONL file from its first record; None for anything else."""
    path = Path(path)
    if path.suffix.lower() not in (".json", ".jsonl", ".ndjson"):
        return None
    try:
        records = _records(decode(read_bytes(path, limits or DataLimits.from_env()))[0], path.suffix.lower())
    except DataError:
        return None
    return detect_format(records[0][0]) if records else None


def read_generative(path: str | Path, *, limits: DataLimits | None = None, plain: bool = False) -> GenerativeDataset:
    """Read and check a generative dataset. `plain`: a .txt/.md file is plain text, one document per
    blank-line-separated paragraph."""
    path = Path(path)
    data = read_bytes(path, limits or DataLimits.from_env())
    text, encoding = decode(data)
    suffix = path.suffix.lower()
    if suffix in (".txt", ".md", ".text") or (plain and suffix not in (".json", ".jsonl", ".ndjson")):
        examples = _paragraphs(text)
        if not examples:
            raise error("empty_file", f"{path.name} has no text.", "Add the documents to train on.")
        return GenerativeDataset("plain", "plain", examples, path.name, hashlib.sha256(data).hexdigest(), encoding)
    records = _records(text, suffix)
    if not records:
        raise error("empty_file", f"{path.name} has no records.", "Add one record per example.")
    fmt = detect_format(records[0][0])
    if fmt is None:
        keys = ", ".join(map(str, records[0][0])) if isinstance(records[0][0], dict) else type(records[0][0]).__name__
        raise error("unknown_format", f"line {records[0][1]}: a record with {keys} is none of the generative "
                    "formats.", 'Use {"messages": [{"role": "user", "content": ...}, {"role": "assistant", '
                    '"content": ...}]} (OpenAI chat), ShareGPT "conversations", alpaca '
                    '"instruction"/"input"/"output", {"text": ...} or "prompt"/"chosen"/"rejected".',
                    line=records[0][1])
    parse = _PARSERS[fmt]
    examples, issues = [], []
    for record, line in records:
        try:
            if not isinstance(record, dict):
                raise _issue("bad_json", line, f"the record is a JSON {type(record).__name__}, not an object.",
                             "Write each record as a JSON object with named fields.")
            examples.append(parse(record, line))
        except DataError as exc:
            issues.extend(exc.issues)
            if len(issues) >= MAX_ISSUES:
                break
    if issues:
        raise DataError(_merge(issues))
    return GenerativeDataset(KIND_OF[fmt], fmt, examples, path.name, hashlib.sha256(data).hexdigest(), encoding)


def _merge(issues: list[Issue]) -> list[Issue]:
    """One issue per (code, message shape) would lose lines; keep each, in file order."""
    return sorted(issues, key=lambda i: (i.line or 0))


# --- records with their line numbers ---------------------------------------------------------

def _records(text: str, suffix: str) -> list[tuple[object, int]]:
    start = len(text) - len(text.lstrip())
    if suffix in (".jsonl", ".ndjson") or (text[start:start + 1] == "{" and _several_documents(text)):
        return _jsonl(text)
    if text[start:start + 1] == "[":
        return _json_array(text, start)
    try:
        with json_limits():
            data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error("bad_json", f"line {exc.lineno} is not valid JSON: {exc.msg} (column {exc.colno}).",
                    _FIX_JSON, line=exc.lineno) from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1:
            return [(r, i + 1) for i, r in enumerate(lists[0])]
        return [(data, 1)]
    raise error("unknown_format", f"the file holds a single JSON {type(data).__name__}.",
                "Use a list of records, or JSON Lines.", line=1)


def _several_documents(text: str) -> bool:
    try:
        with json_limits():
            json.loads(text)
        return False
    except json.JSONDecodeError as exc:
        return exc.msg.startswith("Extra data")


def _jsonl(text: str) -> list[tuple[object, int]]:
    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            with json_limits(number):
                out.append((json.loads(raw), number))
        except json.JSONDecodeError as exc:
            raise error("bad_json", f"line {number} is not valid JSON: {exc.msg} (column {exc.colno}).",
                        _FIX_JSON, line=number) from None
    return out


def _json_array(text: str, start: int) -> list[tuple[object, int]]:
    """Records of a top-level array, each with the line its opening brace is on."""
    decoder, out = json.JSONDecoder(), []
    pos, line, counted = start + 1, 1, 0

    def skip(i: int) -> int:
        return _BLANKS.match(text, i).end()

    def line_at(i: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, i)
        counted = i
        return line

    pos = skip(pos)
    if text[pos:pos + 1] == "]":
        return []
    while True:
        try:
            with json_limits(line_at(pos)):
                record, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise error("bad_json", f"line {exc.lineno} is not valid JSON: {exc.msg} (column {exc.colno}).",
                        _FIX_JSON, line=exc.lineno) from None
        out.append((record, line_at(pos)))
        pos = skip(end)
        if text[pos:pos + 1] == ",":
            pos = skip(pos + 1)
            continue
        if text[pos:pos + 1] == "]":
            return out
        n = line_at(pos)
        raise error("bad_json", f"line {n} is not valid JSON: expected ',' or ']' after a record.",
                    _FIX_JSON, line=n)


def _paragraphs(text: str) -> list[Conversation]:
    out, buf, first = [], [], 0
    for number, raw in enumerate(text.splitlines() + [""], start=1):
        if raw.strip():
            if not buf:
                first = number
            buf.append(raw)
        elif buf:
            out.append(Conversation([Message("text", "\n".join(buf))], first))
            buf = []
    return out


# --- one parser per format --------------------------------------------------------------------

def _issue(code: str, line: int, message: str, fix: str) -> DataError:
    return error(code, f"line {line}: {message}", fix, line=line)


def _text(value, line: int, what: str) -> str:
    if isinstance(value, list):   # OpenAI content parts
        value = "".join(p.get("text", "") for p in value if isinstance(p, dict))
    if value is None:
        raise _issue("missing_field", line, f"{what} is missing.", f"Give {what} a text.")
    if not isinstance(value, str):
        value = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    if not value.strip():
        raise _issue("empty_turn", line, f"{what} is empty.", "Fill it in, or remove the record.")
    return value


def _check_order(messages: list[Message], line: int, *, need_assistant: bool = True) -> list[Message]:
    body = messages[1:] if messages and messages[0].role == "system" else messages
    if any(m.role == "system" for m in body):
        raise _issue("role_order", line, "a system message that is not the first message.",
                     "Put the system message first, or merge it into the first user turn.")
    if body and body[0].role != "user":
        raise _issue("role_order", line, f"the conversation starts with {body[0].role!r}, not a user turn.",
                     "Start with the user's turn (after an optional system message).")
    for a, b in zip(body, body[1:]):
        if a.role == b.role:
            raise _issue("role_order", line, f"two {a.role} turns in a row.",
                         "Alternate user and assistant turns; merge consecutive turns of one role.")
    if need_assistant and not any(m.role == "assistant" for m in body):
        raise _issue("no_assistant_turn", line, "no assistant turn: nothing to learn from.",
                     "Add the answer the model should give as an assistant turn.")
    return messages


def _openai(record: dict, line: int) -> Conversation:
    raw = record.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _issue("missing_field", line, '"messages" is not a non-empty list.',
                     'Write {"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}.')
    messages = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise _issue("missing_field", line, f"message {i + 1} is not an object with role and content.",
                         'Write each message as {"role": ..., "content": ...}.')
        role = {"developer": "system"}.get(m.get("role"), m.get("role"))
        if role not in ROLES:
            raise _issue("bad_role", line, f"message {i + 1} has role {m.get('role')!r}.",
                         "Use system, user or assistant.")
        messages.append(Message(role, _text(m.get("content"), line, f"message {i + 1}'s content"),
                                train=m.get("weight", 1) != 0))
    return Conversation(_check_order(messages, line), line)


def _sharegpt_turns(turns, line: int, what: str = '"conversations"') -> list[Message]:
    if not isinstance(turns, list) or not turns:
        raise _issue("missing_field", line, f"{what} is not a non-empty list.",
                     'Write "conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}].')
    out = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict):
            raise _issue("missing_field", line, f"turn {i + 1} is not an object with from and value.",
                         'Write each turn as {"from": ..., "value": ...}.')
        role = SHAREGPT_ROLES.get(str(t.get("from", "")).lower())
        if role is None:
            raise _issue("bad_role", line, f"turn {i + 1} is from {t.get('from')!r}.",
                         "Use human, gpt or system.")
        out.append(Message(role, _text(t.get("value"), line, f"turn {i + 1}'s value")))
    return out


def _sharegpt(record: dict, line: int) -> Conversation:
    messages = _sharegpt_turns(record.get("conversations"), line)
    if record.get("system"):
        messages.insert(0, Message("system", str(record["system"])))
    return Conversation(_check_order(messages, line), line)


def _alpaca(record: dict, line: int) -> Conversation:
    instruction = _text(record.get("instruction"), line, '"instruction"')
    extra = record.get("input") or ""
    prompt = f"{instruction}\n\n{extra}" if str(extra).strip() else instruction
    output = _text(record.get("output", record.get("response")), line, '"output"')
    messages = [Message("user", prompt), Message("assistant", output)]
    if record.get("system"):
        messages.insert(0, Message("system", str(record["system"])))
    return Conversation(messages, line)


def _plain(record: dict, line: int) -> Conversation:
    return Conversation([Message("text", _text(record.get("text"), line, '"text"'))], line)


def _answer(value, line: int, what: str) -> str:
    if isinstance(value, dict):
        return _text(value.get("value", value.get("content")), line, what)
    if isinstance(value, list):   # a message list: the last assistant turn is the answer
        last = value[-1] if value else {}
        return _answer(last if isinstance(last, dict) else None, line, what)
    return _text(value, line, what)


def _preference(record: dict, line: int) -> PreferencePair:
    prompt = record.get("prompt")
    if isinstance(prompt, list):
        messages = _openai({"messages": prompt}, line).messages if prompt and "role" in prompt[0] else []
    else:
        messages = [Message("user", _text(prompt, line, '"prompt"'))]
    if not messages or messages[-1].role != "user":
        raise _issue("role_order", line, "the prompt does not end with a user turn.",
                     "End the prompt with the user's turn that chosen/rejected answer.")
    return PreferencePair(messages, _answer(record.get("chosen"), line, '"chosen"'),
                          _answer(record.get("rejected"), line, '"rejected"'), line)


def _sharegpt_preference(record: dict, line: int) -> PreferencePair:
    messages = _check_order(_sharegpt_turns(record.get("conversations"), line), line, need_assistant=False)
    if messages[-1].role != "user":
        raise _issue("role_order", line, "the conversation does not end with a user turn.",
                     "End the conversations with the human turn that chosen/rejected answer.")
    return PreferencePair(messages, _answer(record.get("chosen"), line, '"chosen"'),
                          _answer(record.get("rejected"), line, '"rejected"'), line)


_PARSERS = {"openai-chat": _openai, "sharegpt": _sharegpt, "alpaca": _alpaca, "plain": _plain,
            "preference": _preference, "sharegpt-preference": _sharegpt_preference}


@dataclass
class GenerativeSplits:
    train: GenerativeDataset
    validation: GenerativeDataset
    test: GenerativeDataset
    test_origin: str = "split"      # "split" | "user"
    label_names: list[str] = field(default_factory=list)   # none: keeps the core's Splits shape


def split_generative(ds: GenerativeDataset, *, seed: int = 0, test: GenerativeDataset | None = None,
                     validation_fraction: float = 0.1, test_fraction: float = 0.1) -> GenerativeSplits:
    """Deterministic split after dropping exact repeats (a repeat could sit in train and test);
    with a user's test file, only validation is carved from the training file."""
    import numpy as np

    seen, keep = set(), []
    for i, e in enumerate(ds.examples):
        if e.key() not in seen:
            seen.add(e.key())
            keep.append(i)
    ds = ds.subset(keep)
    order = np.random.default_rng(seed).permutation(len(ds)).tolist()
    n_val = max(1, round(len(ds) * validation_fraction)) if len(ds) >= 10 else 0
    n_test = 0 if test is not None else (max(1, round(len(ds) * test_fraction)) if len(ds) >= 10 else 0)
    test_ds = test if test is not None else ds.subset(sorted(order[:n_test]))
    validation = ds.subset(sorted(order[n_test:n_test + n_val]))
    train = ds.subset(sorted(order[n_test + n_val:]))
    return GenerativeSplits(train, validation, test_ds, "user" if test is not None else "split")
