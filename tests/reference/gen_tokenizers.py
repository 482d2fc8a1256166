#!/usr/bin/env python3
"""Reference token ids for the text layer (src/text): tokenizers, added tokens, HealthGPT prompts.

Oracles (pinned in requirements.txt):
  * transformers 4.41.2 slow tokenizers, which is what HealthGPT uses (`use_fast=False`):
      Phi-3   -> LlamaTokenizer (sentencepiece 0.2.0, legacy=False)
      Phi-4   -> GPT2Tokenizer (vocab.json + merges.txt; GPT-2's own split regex)
      Qwen2.5 -> Qwen2Tokenizer (NFC on the whole text, Qwen's split regex)
  * tokenizers 0.19.1 fast tokenizers (the `tokenizer.json` path), through transformers' *Fast classes.

Vocabularies come from $HEALTHGPT_SHARED_DATA/tokenizers (never copied into the repo); the tokenizer
configuration of each model (added tokens and their flags, add_bos_token, legacy, special-token map) is
pinned here, reconstructed from public sources (see PHI3_SOURCES / PHI4_SOURCES), and written to
tests/fixtures/tokenizers/<model>/tokenizer_config.json so the C++ tests load exactly the same thing.

Outputs (tests/fixtures/tokenizers/):
  phi3/tokenizer_config.json          pinned Phi-3-mini-4k-instruct config (current revision: add_bos_token false)
  phi3/tokenizer_config.add_bos.json  the same with add_bos_token true (exercises the BOS branch of the prompt code)
  phi3/tokenizer.json.gz              Phi-3 fast tokenizer converted by transformers from the shared tokenizer.model
                                      (Llama-2 "legacy" layout, which reproduces llama.cpp's Phi-3 test vectors)
  phi4/tokenizer_config.json          pinned microsoft/phi-4 config (added tokens 100256..100351)
  cases_<vocab>.jsonl.gz              per string: text, slow ids, fast ids, slow/fast decodes (with and without
                                      skip_special_tokens); vocab in phi3, cl100k (= Phi-4), qwen2
  decode_<vocab>.jsonl.gz             random id sequences (byte pieces, specials, ...) and their slow/fast decodes
  flags.jsonl.gz                      custom added tokens exercising lstrip/rstrip/single_word/normalized
  prompts.jsonl.gz                    full HealthGPT prompts (templates, images, turns, generation suffix) and ids
  summary.json                        counts, versions, pinned revisions
Deterministic: fixed seeds, sorted keys, gzip mtime 0.
"""
import base64
import gzip
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time

T0 = time.time()


def log(msg):
    print(f"[{time.time() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)

import tokenizers
import transformers
from transformers import AutoTokenizer, GPT2TokenizerFast, LlamaTokenizerFast, PreTrainedTokenizerFast
from transformers import AddedToken as TFAddedToken

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "tokenizers")
SHARED = os.environ.get("HEALTHGPT_SHARED_DATA", os.path.join(HERE, "..", "..", "..", "shared", "data"))
TOK = os.path.join(SHARED, "tokenizers")

# ----------------------------------------------------------------------------------------------
# Pinned tokenizer configurations.

PHI3_SOURCES = (
    "microsoft/Phi-3-mini-4k-instruct tokenizer_config.json, revision current since the 2024-07 update: "
    "add_bos_token=false and add_eos_token=false (quoted with line numbers in meta-pytorch/torchtune PR #1778, "
    "2024-10-09); added tokens 32000-32010 normalized=false, special=true, rstrip=true except <|endoftext|> "
    "(transformers integrations/ggml.py GGUFPhi3Converter 'special tokens from phi3 tokenizer config', and "
    "the Phi-3 tokenizer_config copied in public code); legacy=false, tokenizer_class LlamaTokenizer, "
    "eos/pad <|endoftext|>, no additional_special_tokens (HealthGPT's vocabulary extension runs, paper Table 6)."
)
PHI3_NAMES = ["<|assistant|>", "<|placeholder1|>", "<|placeholder2|>", "<|placeholder3|>", "<|placeholder4|>",
              "<|system|>", "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>"]


def added(content, rstrip=False, special=True, lstrip=False, normalized=False, single_word=False):
    return {"content": content, "lstrip": lstrip, "normalized": normalized, "rstrip": rstrip,
            "single_word": single_word, "special": special}


def phi3_config(add_bos=False):
    dec = {"0": added("<unk>"), "1": added("<s>"), "2": added("</s>", rstrip=True, special=False),
           "32000": added("<|endoftext|>")}
    for i, name in enumerate(PHI3_NAMES):
        dec[str(32001 + i)] = added(name, rstrip=True)
    return {"add_bos_token": add_bos, "add_eos_token": False, "added_tokens_decoder": dec, "bos_token": "<s>",
            "clean_up_tokenization_spaces": False, "eos_token": "<|endoftext|>", "legacy": False,
            "model_max_length": 4096, "pad_token": "<|endoftext|>", "padding_side": "left",
            "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer", "unk_token": "<unk>",
            "use_default_system_prompt": False}


PHI4_SOURCES = (
    "microsoft/phi-4 tokenizer_config.json: tokenizer_class GPT2Tokenizer (quoted in dotnet/machinelearning "
    "issue #7337); ids of the added tokens per the shared data README (dummy_0 100256, <|endoftext|> 100257, "
    "fim 100258-100260, dummy_1..3 100261-100263, <|im_start|> 100264, <|im_end|> 100265, <|im_sep|> 100266, "
    "dummy_4.. 100267-100351 skipping <|endofprompt|> 100276), all special, no strip flags; eos <|im_end|> and "
    "pad <|dummy_85|> as in the 2025-02 revision (6fbb3d3); no add_bos_token."
)


def phi4_added_tokens():
    names = {100256: "<|dummy_0|>", 100257: "<|endoftext|>", 100258: "<|fim_prefix|>", 100259: "<|fim_middle|>",
             100260: "<|fim_suffix|>", 100261: "<|dummy_1|>", 100262: "<|dummy_2|>", 100263: "<|dummy_3|>",
             100264: "<|im_start|>", 100265: "<|im_end|>", 100266: "<|im_sep|>", 100276: "<|endofprompt|>"}
    k = 4
    for i in range(100267, 100352):
        if i == 100276:
            continue
        names[i] = f"<|dummy_{k}|>"
        k += 1
    assert names[100351] == "<|dummy_87|>" and len(names) == 96
    return names


def phi4_config():
    dec = {str(i): added(c) for i, c in sorted(phi4_added_tokens().items())}
    return {"added_tokens_decoder": dec, "bos_token": "<|endoftext|>", "clean_up_tokenization_spaces": False,
            "eos_token": "<|im_end|>", "model_max_length": 16384, "pad_token": "<|dummy_85|>",
            "tokenizer_class": "GPT2Tokenizer"}


# ----------------------------------------------------------------------------------------------
# Reference tokenizers.

def write_vocab_merges(tokenizer_json, d):
    """vocab.json + merges.txt (what the slow GPT2/Qwen2 tokenizers read) from a tokenizer.json."""
    m = json.load(open(tokenizer_json, encoding="utf-8"))["model"]
    json.dump(m["vocab"], open(os.path.join(d, "vocab.json"), "w", encoding="utf-8"), ensure_ascii=False)
    with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for x in m["merges"]:
            f.write((x if isinstance(x, str) else " ".join(x)) + "\n")


def tokenizer_json_for_0_19(src, dst, replace_added=None):
    """tokenizers 0.19 reads merges only as "a b" strings; newer files store pairs. Optionally replace the
    added tokens (Phi-4 on top of cl100k): they also go into the model vocabulary, as in Phi-4's own file,
    otherwise tokenizers 0.19 renumbers them."""
    j = json.load(open(src, encoding="utf-8"))
    merges = j["model"]["merges"]
    if merges and not isinstance(merges[0], str):
        assert all(" " not in a and " " not in b for a, b in merges)
        j["model"]["merges"] = [" ".join(m) for m in merges]
    if replace_added is not None:
        vocab = {k: v for k, v in j["model"]["vocab"].items() if v < min(a["id"] for a in replace_added)}
        for a in replace_added:
            vocab[a["content"]] = a["id"]
        j["model"]["vocab"] = vocab
        j["added_tokens"] = replace_added
    json.dump(j, open(dst, "w", encoding="utf-8"), ensure_ascii=False)


class Ref:
    """A slow and a fast transformers tokenizer for one vocabulary."""

    def __init__(self, name, slow, fast):
        self.name, self.slow, self.fast = name, slow, fast


def build_phi3(tmp, add_bos=False):
    d = os.path.join(tmp, "phi3" + ("_bos" if add_bos else ""))
    os.makedirs(d)
    shutil.copy(os.path.join(TOK, "phi3", "tokenizer.model"), d)
    json.dump(phi3_config(add_bos), open(os.path.join(d, "tokenizer_config.json"), "w"))
    # HealthGPT: transformers.AutoTokenizer.from_pretrained(path, padding_side="right", use_fast=False)
    slow = AutoTokenizer.from_pretrained(d, padding_side="right", use_fast=False)
    assert type(slow).__name__ == "LlamaTokenizer" and len(slow) == 32011
    # Fast: the published tokenizer.json is the Llama-2 layout (normalizer Prepend("▁") + Replace(" ", "▁"),
    # no pre-tokenizer); converting with legacy=True reproduces it (checked against llama.cpp's vectors below).
    # The converted tokenizer is saved and loaded back, as a user of the HF repository loads it.
    converted = LlamaTokenizerFast.from_pretrained(d, legacy=True, from_slow=True)
    converted.backend_tokenizer.save(os.path.join(d, "tokenizer.json"))
    fast = LlamaTokenizerFast.from_pretrained(d, padding_side="right")
    assert len(fast) == 32011 and fast.backend_tokenizer.normalizer is not None
    return Ref("phi3", slow, fast)


def build_phi4(tmp):
    d = os.path.join(tmp, "phi4")
    os.makedirs(d)
    write_vocab_merges(os.path.join(TOK, "cl100k", "tokenizer.json"), d)
    json.dump(phi4_config(), open(os.path.join(d, "tokenizer_config.json"), "w"))
    slow = AutoTokenizer.from_pretrained(d, padding_side="right", use_fast=False)
    assert type(slow).__name__ == "GPT2Tokenizer" and len(slow) == 100352, (type(slow), len(slow))
    names = phi4_added_tokens()
    fast_added = [dict(id=i, **added(c)) for i, c in sorted(names.items())]
    tokenizer_json_for_0_19(os.path.join(TOK, "cl100k", "tokenizer.json"), os.path.join(d, "tokenizer.json"),
                            replace_added=fast_added)
    fast = GPT2TokenizerFast(tokenizer_file=os.path.join(d, "tokenizer.json"), bos_token="<|endoftext|>",
                             eos_token="<|im_end|>", pad_token="<|dummy_85|>", unk_token=None,
                             add_prefix_space=False, clean_up_tokenization_spaces=False)
    assert len(fast) == 100352
    for i, c in names.items():
        assert slow.convert_tokens_to_ids(c) == i and fast.convert_tokens_to_ids(c) == i, (i, c)
    return Ref("cl100k", slow, fast)


def build_qwen2(tmp):
    d = os.path.join(tmp, "qwen2")
    os.makedirs(d)
    write_vocab_merges(os.path.join(TOK, "qwen2", "tokenizer.json"), d)
    shutil.copy(os.path.join(TOK, "qwen2", "tokenizer_config.json"), d)
    slow = AutoTokenizer.from_pretrained(d, padding_side="right", use_fast=False)
    assert type(slow).__name__ == "Qwen2Tokenizer"
    tokenizer_json_for_0_19(os.path.join(TOK, "qwen2", "tokenizer.json"), os.path.join(d, "tokenizer.json"))
    os.remove(os.path.join(d, "vocab.json"))
    os.remove(os.path.join(d, "merges.txt"))
    fast = AutoTokenizer.from_pretrained(d, padding_side="right", use_fast=True)
    assert type(fast).__name__ == "Qwen2TokenizerFast" and len(fast) == len(slow), (type(fast), len(fast))
    return Ref("qwen2", slow, fast)


def healthgpt_extend(tok, vq_idx_nums=8192):
    """llava/demo/utils.py add_special_tokens_and_resize_model, tokenizer half (the model half resizes rows)."""
    if len(tok.additional_special_tokens) != 0:
        return 0
    index_tokens = [f"<idx_{i}>" for i in range(vq_idx_nums)]
    special_tokens = {"additional_special_tokens": ["<start_index>"] + index_tokens + ["<end_index>"] + ["<pixel_newline>"]}
    return tok.add_special_tokens(special_tokens)


# ----------------------------------------------------------------------------------------------
# Test strings.

SCRIPTS = {
    "latin": ["The quick brown fox jumps over the lazy dog.", "naïve café résumé", "Ångström", "Straße", "œuvre",
              "São Paulo", "Łódź", "Dvořák", "İstanbul ılık", "ĲsselMeer", "ﬁnance ﬂow"],
    "greek": ["Αλφάβητο", "ελληνικά γράμματα", "ΣΊΣΥΦΟΣ"],
    "cyrillic": ["Привет, мир!", "Ёлка и ёжик", "Україна", "Беларусь"],
    "cjk": ["你好，世界", "医学影像诊断", "肺部结节", "漢字の読み方", "日本語のテキスト", "カタカナとひらがな",
            "한국어 텍스트", "흉부 엑스레이", "𠀀𠀁𠀂", "龘靐齉"],
    "arabic": ["مرحبا بالعالم", "الأشعة السينية للصدر", "ٱلْعَرَبِيَّةُ", "١٢٣٤٥٦٧٨٩٠"],
    "hebrew": ["שלום עולם", "בְּרֵאשִׁית"],
    "devanagari": ["नमस्ते दुनिया", "हिन्दी पाठ", "क्षत्रिय", "०१२३४५६७८९"],
    "thai": ["สวัสดีชาวโลก", "ภาษาไทย", "กรุงเทพมหานคร"],
    "other": ["ሰላም ልዑል", "გამარჯობა", "Բարեւ", "བོད་ཡིག", "ᏣᎳᎩ", "ᠮᠣᠩᠭᠣᠯ", "ភាសាខ្មែរ", "සිංහල", "தமிழ்",
              "ਪੰਜਾਬੀ", "বাংলা", "ગુજરાતી", "ಕನ್ನಡ", "മലയാളം", "తెలుగు", "ꦗꦮ", "ᚠᛇᚻ", "𓀀𓀁", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
              "𝐁𝐨𝐥𝐝 𝟏𝟐𝟑", "ⓐⓑⓒ", "Ｆｕｌｌｗｉｄｔｈ １２３", "ｶﾀｶﾅ"],
    "emoji": ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇺🇸🇯🇵", "1️⃣#️⃣", "🧑🏿‍⚕️", "👩🏻‍🔬", "❤️‍🔥", "🫀🫁🩻🩺💊",
              "⌚⏰", "©®™", "🏴󠁧󠁢󠁳󠁣󠁴󠁿"],
    "combining": ["e\u0301", "a\u0308o\u0308u\u0308", "\u1100\u1161\u11a8", "\u0915\u094d\u0937", "Z\u0351\u0353\u0330a\u0300l\u0301g\u0302o\u0303",
                  "\u0627\u0644\u0651\u064e", "n\u0303", "\u00e9 vs e\u0301", "\u212b\u2126", "\u0041\u030a"],
    "medical": ["Chest X-ray shows bilateral infiltrates.", "CT: 5 mm nodule in the RLL, HU -650.",
                "MRI T2-weighted FLAIR hyperintensity", "BP 120/80 mmHg; HR 72 bpm; SpO2 98%",
                "Dx: pneumonia (J18.9)", "Rx: amoxicillin 500mg PO q8h x 7d", "What is the modality of this image?",
                "Is there evidence of pneumothorax?", "Describe the findings.", "Convert this CT to MRI.",
                "Generate a chest X-ray with cardiomegaly."],
    "code": ["def f(x):\n    return x * 2\n", "int main() { return 0; }", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
             '{"key": [1, 2, 3], "ok": true, "s": "\\u00e9"}', "SELECT * FROM t WHERE id = 42;", "x = y ** 2 // 3",
             "#include <vector>\n#define N 1024", "<div class=\"a\">&amp;&lt;&gt;</div>", "$ ls -la | grep '^d'",
             "if a!=b && c<=d || e>=f: pass", "lambda: None", "// comment\n/* block */", "a\\b\\c", "~!@#$%^&*()_+`-=[]{}|;':\",./<>?"],
    "urls": ["https://huggingface.co/microsoft/Phi-3-mini-4k-instruct", "http://example.com:8080/path?q=1&r=2#frag",
             "mailto:doctor@hospital.org", "ftp://files.example.org/a_b-c.tar.gz", "www.example.co.uk/~user/",
             "file:///home/user/scan_001.dcm"],
    "contractions": ["it's", "IT'S", "we'll", "WE'LL", "don't", "DON'T", "they're", "I've", "I'm", "he'd",
                     "'s 't 're 've 'm 'll 'd", "Rock 'n' roll", "O'Brien's", "’s curly"],
    "numbers": ["0", "7", "42", "123", "1234", "12345", "123456", "1234567", "12345678901234567890", "3.14159",
                "1,000,000", "1e-10", "-273.15", "0x1F", "2024-11-27", "12:30:45", "+1 (555) 123-4567", "½ ¾ ⅓",
                "²³¹", "Ⅻ ⅻ", "٣٤٥", "১২৩", "１２３４"],
    "odd": ["\u00a0nbsp\u00a0", "zero\u200bwidth", "zw\u200cnj\u200dj", "\ufeffbom", "\u2028line\u2029para",
            "\x00nul", "\x07bell", "\x1b[31mred\x1b[0m", "\x7fdel", "a\x85b", "\x1c\x1d\x1e\x1f", "tab\vvt\fff",
            "\ue000\uf8ff", "\U000f0000", "\ufffd", "\uffff", "\U0010ffff", "\u180e", "\u3000ideographic\u3000",
            "\u2000\u2001\u2002\u200a", "\u202f\u205f", "\u1680ogham", "▁", "▁▁x", "x▁", "<0x0A>", "<0xFF>",
            "\\xff\\xfe", "\\u0000", "&#x41;", "%E4%BD%A0", "ÃƒÂ©", "Ã©", "\u0000\u0001"],
}
WHITESPACE = [" ", "  ", "   ", "    ", "        ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r", "\r\n", "\r\n\r\n",
              " \n", "\n ", " \t ", "\t\n", "\n\t", " \r\n ", "\u00a0", "\u3000", "\u2003", "\x0b", "\x0c", " \x85 "]
PUNCT = [".", ",", "!", "?", "...", "—", "–", "-", "(", ")", "[", "]", "{", "}", ":", ";", "\"", "'", "`", "«»",
         "„“", "「」", "。", "、", "！", "？", "•", "·", "/", "\\", "|", "_", "__", "*", "**", "#", "##", "@", "&"]
EXT_TOKENS = ["<start_index>", "<idx_0>", "<idx_1>", "<idx_10>", "<idx_100>", "<idx_8191>", "<end_index>",
              "<pixel_newline>", "<idx_8192>", "<idx_>", "<start_index", "<idx_12><idx_34>"]

SPECIALS = {
    "phi3": ["<s>", "</s>", "<unk>", "<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>",
             "<|placeholder1|>", "<|placeholder6|>"],
    "cl100k": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|im_sep|>", "<|fim_prefix|>", "<|endofprompt|>",
               "<|dummy_0|>", "<|dummy_85|>", "<|dummy_87|>"],
    "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<tool_call>",
              "</tool_call>", "<|fim_prefix|>", "<|file_sep|>", "<think>", "</think>"],
}
NEAR_SPECIALS = ["<|end", "<|end|", "|>", "<|", "<<|end|>>", "<|END|>", "< |end| >", "<|im_end", "<|im_end|>>",
                 "<s", "s>", "<|endoftext|", "<image>", "<|unknown|>", "<|dummy_88|>", "<|dummy_-1|>"]

RANGES = [(0x20, 0x7e), (0xa0, 0x24f), (0x370, 0x3ff), (0x400, 0x4ff), (0x590, 0x5ff), (0x600, 0x6ff),
          (0x900, 0x97f), (0xe00, 0xe7f), (0x1100, 0x11ff), (0x2000, 0x206f), (0x2190, 0x22ff), (0x2500, 0x257f),
          (0x3040, 0x30ff), (0x4e00, 0x9fff), (0xac00, 0xd7a3), (0xff00, 0xffef), (0x1f300, 0x1f6ff),
          (0x1f900, 0x1f9ff), (0x0300, 0x036f), (0x1d400, 0x1d7ff), (0x20000, 0x2a6df), (0x0, 0x1f)]


def make_strings(vocab, n_random, seed):
    rng = random.Random(seed)
    specials = SPECIALS[vocab]
    others = [s for v, ss in SPECIALS.items() if v != vocab for s in ss]
    fixed = ["", " ", "  ", "a", " a", "a ", " a ", "Hello", " Hello", "Hello ", "hello world", "Hello  World",
             "HELLO WORLD", "   leading", "trailing   ", "  both  "]
    for _, items in sorted(SCRIPTS.items()):
        fixed += items
    fixed += WHITESPACE + PUNCT + NEAR_SPECIALS + EXT_TOKENS
    for ws in ["", " ", "  ", "\n", " \n ", "\t", "\n\n", "\x1c", "\u3000", "\x85", "\u00a0"]:
        for s in specials:
            fixed += [s + ws + "text", "text" + ws + s, ws + s + ws, s + ws + s, "a" + s + ws + "b" + s]
    for s in specials:
        fixed += [s, s * 2, s + "\n" + s + "\n", "x" + s + "y", " " + s + " ", s + "\n\nHello"]
    fixed += [s + "\nHi" for s in others]
    for d in range(1, 22):
        fixed.append("".join(str((i * 7 + d) % 10) for i in range(d)))
        fixed.append("x" + "9" * d + "y")
    pool = []
    for _, items in sorted(SCRIPTS.items()):
        for it in items:
            pool.append(it)
            pool += it.split()
    pool += specials * 3 + others + NEAR_SPECIALS + EXT_TOKENS + PUNCT
    out = list(fixed)
    for _ in range(n_random):
        kind = rng.random()
        if kind < 0.55:  # fragments joined by random separators
            parts = [rng.choice(pool) for _ in range(rng.randint(1, 6))]
            seps = [rng.choice(WHITESPACE + ["", "", "", " ", " ", " "] + PUNCT) for _ in parts]
            s = "".join(p + q for p, q in zip(parts, seps))
            if rng.random() < 0.3:
                s = rng.choice(WHITESPACE) + s
        elif kind < 0.75:  # random code points from assorted blocks
            lo, hi = rng.choice(RANGES)
            s = "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 12)))
            s = "".join(c for c in s if not 0xd800 <= ord(c) <= 0xdfff)
        elif kind < 0.85:  # a substring of a long mixed text
            long = " ".join(rng.choice(pool) for _ in range(40))
            a = rng.randint(0, len(long) - 1)
            s = long[a:a + rng.randint(1, 60)]
        elif kind < 0.93:  # numbers and whitespace runs
            s = "".join(rng.choice(["1", "23", "456", "7890", " ", "  ", ".", ",", "\n", "\t", "-", "x"])
                        for _ in range(rng.randint(1, 15)))
        else:  # repeated characters (long BPE merges chains)
            s = rng.choice(["a", "ab", " ", "\n", "=", "-", "0", "啊", "😀", "ー", "."]) * rng.randint(2, 40)
        out.append(s)
    # a few long documents
    for i in range(8):
        out.append(" ".join(rng.choice(pool) for _ in range(rng.randint(150, 400))))
    seen, uniq = set(), []
    for s in out:
        if s not in seen:
            seen.add(s)
            uniq.append(s)
    return uniq


# ----------------------------------------------------------------------------------------------
# HealthGPT prompts: llava/conversation.py (MPT and QWEN_2 styles) and llava/mm_utils.py
# tokenizer_image_token, re-implemented from the spec (healthgpt-reference.md §3.2-3.3) and checked line by
# line against the function text (LLaVA HEAD, byte-identical in HealthGPT).

IMAGE_TOKEN_INDEX = -200
TEMPLATES = {
    "phi3_instruct": dict(style="mpt", system="<|system|>\nYou are a helpful AI assistant.",
                          roles=("\n<|user|>\n", "\n<|assistant|>\n"), sep="<|end|>"),
    "phi4_instruct": dict(style="mpt", system="<|im_start|>system<|im_sep|>\nYou are a medieval knight and must provide explanations to modern people.",
                          roles=("\n<|im_start|>user<|im_sep|>\n", "\n<|im_start|>assistant<|im_sep|>\n"), sep="<|im_end|>"),
    "qwen_2": dict(style="qwen2", system="<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
                   roles=("<|im_start|>user\n", "<|im_start|>assistant\n"), sep="<|im_end|>\n", sep2="<|im_end|>\n"),
}


def get_prompt(template, messages):
    t = TEMPLATES[template]
    if t["style"] == "mpt":
        ret = t["system"] + t["sep"]
        for role, message in messages:
            ret += role + message + t["sep"] if message else role
    else:
        seps = [t["sep"], t["sep2"]]
        ret = t["system"] + seps[0]
        for i, (role, message) in enumerate(messages):
            ret += role + message + seps[i % 2] if message else role
    return ret


def tokenizer_image_token(prompt, tokenizer):
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]
    ids = []
    offset = 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        ids.append(chunks[0][0])
    sep = [IMAGE_TOKEN_INDEX] * (offset + 1)
    interleaved = [e for sub in zip(chunks, [sep] * len(chunks)) for e in sub][:-1]
    for x in interleaved:
        ids.extend(x[offset:])
    return ids


def prompt_cases(template):
    """(turns, generation) where turns = [(question, n_images, answer or None)]."""
    qs = ["What is the modality of this image?", "Describe the findings.", "Is there a fracture?",
          "  leading and trailing spaces  ", "Multi\nline\n\nquestion", "数字 12345 and émojis 🫁", "",
          "Literal <|end|> and <|im_end|> and <start_index> inside", "Tab\tand\r\nCRLF", "<image> in the text"]
    cases = []
    for q in qs:
        cases.append(([(q, 0, None)], False))
        cases.append(([(q, 1, None)], False))
    for n in (2, 3):
        cases.append(([("Compare these images.", n, None)], False))
    cases.append(([("Describe the image.", 1, "A chest X-ray."), ("Any effusion?", 0, None)], False))
    cases.append(([("Hello", 0, "Hi! How can I help?"), ("Look at this.", 1, None)], False))
    cases.append(([("First", 1, "One."), ("Second", 1, "Two."), ("Third?", 0, None)], False))
    if template != "qwen_2":  # HealthGPT's generation path (vocabulary extension) exists for Phi-3 and Phi-4
        cases.append(([("Convert the CT image to an MRI image.", 1, None)], True))
        cases.append(([("Generate a chest X-ray showing cardiomegaly.", 0, None)], True))
        cases.append(([("Reconstruct this image.", 2, None)], True))
        cases.append(([("Describe.", 1, "Normal study."), ("Now make it an MRI.", 0, None)], True))
    return cases


def build_prompt(template, turns, generation):
    roles = TEMPLATES[template]["roles"]
    messages = []
    for q, n_images, answer in turns:
        messages.append((roles[0], "<image>\n" * n_images + q))
        messages.append((roles[1], answer))
    prompt = get_prompt(template, messages)
    return prompt + "<start_index>" if generation else prompt


# ----------------------------------------------------------------------------------------------

def dump_gz(name, rows):
    path = os.path.join(OUT, name)
    raw = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode("utf-8")
    with open(path, "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=0, compresslevel=9, filename="") as g:
            g.write(raw)
    return len(rows)


def encode_cases(ref, strings):
    rows = []
    for s in strings:
        slow = ref.slow(s).input_ids
        fast = ref.fast(s).input_ids
        rows.append({
            "text": s, "slow": slow, "fast": fast,
            "slow_dec": ref.slow.decode(slow), "slow_dec_skip": ref.slow.decode(slow, skip_special_tokens=True),
            "fast_dec": ref.fast.decode(fast), "fast_dec_skip": ref.fast.decode(fast, skip_special_tokens=True),
        })
    return rows


def decode_cases(ref, seed, n):
    rng = random.Random(seed)
    size = len(ref.slow)
    added = sorted(ref.slow.added_tokens_decoder)
    byte_ids = [i for i in range(min(size, 300)) if ref.slow.convert_ids_to_tokens(i).startswith("<0x")]
    rows = []
    for _ in range(n):
        ids = []
        for _ in range(rng.randint(1, 12)):
            r = rng.random()
            if r < 0.3 and byte_ids:
                ids.append(rng.choice(byte_ids))
            elif r < 0.45:
                ids.append(rng.choice(added))
            elif r < 0.55:
                ids.append(rng.randint(0, 300))
            else:
                ids.append(rng.randint(0, size - 1))
        row = {"ids": ids}
        for key, tok in (("slow", ref.slow), ("fast", ref.fast)):
            row[key + "_dec"] = tok.decode(ids)
            row[key + "_dec_skip"] = tok.decode(ids, skip_special_tokens=True)
        rows.append(row)
    return rows


def flag_cases(tmp):
    """Custom added tokens with lstrip/rstrip/single_word/normalized on the Phi-3 and Qwen2 vocabularies."""
    defs = [dict(content="[L]", lstrip=True, rstrip=False, single_word=False, normalized=False, special=True),
            dict(content="[R]", lstrip=False, rstrip=True, single_word=False, normalized=False, special=False),
            dict(content="[LR]", lstrip=True, rstrip=True, single_word=False, normalized=False, special=True),
            dict(content="word", lstrip=False, rstrip=False, single_word=True, normalized=False, special=False),
            dict(content="[N]", lstrip=False, rstrip=False, single_word=False, normalized=True, special=False),
            dict(content="[[N]]", lstrip=False, rstrip=False, single_word=False, normalized=False, special=False)]

    def extra():  # fresh objects per call: tokenizers' add_tokens rewrites the flags of what it is given
        return [TFAddedToken(**d) for d in defs]
    texts = ["a [L] b", "a   [L]b", "a\n\t[L]", "[L]", " [L] ", "x[R]   y", "x [R]\n\ny", "[R]", "[R] ",
             "a  [LR]  b", "[LR][LR]", "  [LR]", "a word b", "aword b", "a wordb", "word", "words word_ word.",
             "(word)", "_word", "wörd word", "a [N] b", "[N]", "x[N]y", " [N]", "[[N]]", "a[[N]]b", "[L][R][N]",
             "\u00a0[L]\u00a0", "\x1c[R]\x1cz", "\u3000[LR]\u3000", "word\u00e9", "éword", "5word", "word5",
             "a [L] [R] word [N] [LR] b", "", "   ", "[R]\u2028[L]"]
    rows = []
    for build in (lambda: build_phi3(tmp + "/f"), lambda: build_qwen2(tmp + "/g")):
        ref = build()
        ref.slow.add_tokens(extra())
        ref.fast.add_tokens(extra())
        ids = [ref.slow.convert_tokens_to_ids(d["content"]) for d in defs]
        assert ids == [ref.fast.convert_tokens_to_ids(d["content"]) for d in defs], (ref.name, ids)
        rows.append({"vocab": ref.name, "ids": ids})
        for t in texts:
            rows.append({"vocab": ref.name, "text": t, "slow": ref.slow(t).input_ids, "fast": ref.fast(t).input_ids})
    return rows, defs


def unicode_cases(seed, n):
    """NFC (Python unicodedata) and lossy UTF-8 decoding (bytes.decode("utf-8", "replace"))."""
    import unicodedata
    rng = random.Random(seed)
    rows = []
    marks = [0x300, 0x301, 0x308, 0x323, 0x327, 0x328, 0x31b, 0x345, 0x5b4, 0x93c, 0x94d, 0x3099, 0x309a, 0x1161, 0x11a8]
    bases = [0x41, 0x61, 0x45, 0x65, 0x4f, 0x55, 0x75, 0x3b1, 0x3c9, 0x415, 0x928, 0x304b, 0x30cf, 0x1100, 0xac00,
             0x1e00, 0x212b, 0x2126, 0xf900, 0x1d15e, 0x0915, 0x5d1]
    for _ in range(n):
        s = "".join(chr(rng.choice(bases + marks)) for _ in range(rng.randint(1, 8)))
        for v in (s, unicodedata.normalize("NFD", s)):
            rows.append({"nfc_in": v, "nfc_out": unicodedata.normalize("NFC", v)})
    pool = [b"\x00", b"a", b"\xc3\xa9", b"\xe4\xbd\xa0", b"\xf0\x9f\x98\x80", b"\x80", b"\xbf", b"\xc0", b"\xc1\x81",
            b"\xe0\x80", b"\xe0\xa0", b"\xed\xa0\x80", b"\xed\x9f\xbf", b"\xf0\x8f", b"\xf4\x90\x80\x80", b"\xf5", b"\xff",
            b"\xe4\xbd", b"\xf0\x9f\x98", b"\xc3", b"\xf4\x8f\xbf\xbf", b"\xef\xbb\xbf"]
    for _ in range(n):
        b = b"".join(rng.choice(pool) for _ in range(rng.randint(1, 6)))
        rows.append({"bytes": b.hex(), "lossy": b.decode("utf-8", errors="replace")})
    return rows


def gguf_arrays():
    """llama.cpp's Phi-3 vocabulary GGUF as gguf-py reads it (the oracle for our GGUF metadata path)."""
    from gguf import GGUFReader
    r = GGUFReader(os.path.join(TOK, "phi3", "ggml-vocab-phi-3.gguf"))

    def scalar(key):
        f = r.fields[key]
        return f.parts[f.data[0]].tolist()[0]

    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    def numbers(key):
        f = r.fields[key]
        return [f.parts[i].tolist()[0] for i in f.data]

    return {"model": bytes(r.fields["tokenizer.ggml.model"].parts[-1]).decode(),
            "pre": bytes(r.fields["tokenizer.ggml.pre"].parts[-1]).decode(),
            "tokens": strings("tokenizer.ggml.tokens"), "scores": numbers("tokenizer.ggml.scores"),
            "token_type": numbers("tokenizer.ggml.token_type"),
            "bos_id": scalar("tokenizer.ggml.bos_token_id"), "eos_id": scalar("tokenizer.ggml.eos_token_id"),
            "unk_id": scalar("tokenizer.ggml.unknown_token_id"), "pad_id": scalar("tokenizer.ggml.padding_token_id"),
            "add_bos": bool(scalar("tokenizer.ggml.add_bos_token")), "add_eos": bool(scalar("tokenizer.ggml.add_eos_token"))}


def main():
    os.makedirs(OUT, exist_ok=True)
    for sub in ("phi3", "phi4"):
        os.makedirs(os.path.join(OUT, sub), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="gen_tokenizers_")
    summary = {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
               "phi3_config_sources": PHI3_SOURCES, "phi4_config_sources": PHI4_SOURCES}
    try:
        # pinned configs
        json.dump(phi3_config(False), open(os.path.join(OUT, "phi3", "tokenizer_config.json"), "w"), indent=1, sort_keys=True)
        json.dump(phi3_config(True), open(os.path.join(OUT, "phi3", "tokenizer_config.add_bos.json"), "w"), indent=1, sort_keys=True)
        json.dump(phi4_config(), open(os.path.join(OUT, "phi4", "tokenizer_config.json"), "w"), indent=1, sort_keys=True)

        arrays = gguf_arrays()
        raw = json.dumps(arrays, ensure_ascii=False, sort_keys=True).encode("utf-8")
        with open(os.path.join(OUT, "phi3", "ggml-vocab-phi-3.arrays.json.gz"), "wb") as f:
            with gzip.GzipFile(fileobj=f, mode="wb", mtime=0, compresslevel=9, filename="") as g:
                g.write(raw)
        summary["gguf_phi3_tokens"] = len(arrays["tokens"])

        refs = {"phi3": build_phi3(tmp), "cl100k": build_phi4(tmp), "qwen2": build_qwen2(tmp)}

        # Phi-3 fast tokenizer.json (what the converted fast tokenizer serialises to)
        raw = refs["phi3"].fast.backend_tokenizer.to_str().encode("utf-8")
        with open(os.path.join(OUT, "phi3", "tokenizer.json.gz"), "wb") as f:
            with gzip.GzipFile(fileobj=f, mode="wb", mtime=0, compresslevel=9, filename="") as g:
                g.write(raw)

        # sanity: the fast Phi-3 reproduces llama.cpp's vectors, so it is the published tokenizer.json layout
        for name, ref in (("phi3", refs["phi3"]), ("qwen2", refs["qwen2"])):
            inp = open(os.path.join(TOK, name, f"ggml-vocab-{'phi-3' if name == 'phi3' else name}.gguf.inp"), encoding="utf-8").read().split("\n__ggml_vocab_test__\n")
            out = open(os.path.join(TOK, name, f"ggml-vocab-{'phi-3' if name == 'phi3' else name}.gguf.out"), encoding="utf-8").read().split("\n")
            bad = sum(ref.fast.encode(t, add_special_tokens=False) != [int(x) for x in o.split()] for t, o in zip(inp, out))
            summary[f"{name}_llamacpp_vectors_fast_mismatches"] = bad
            assert bad == 0, (name, bad)

        # tiktoken ranks == tokenizer.json vocabulary (so the same reference ids hold for both files)
        bu = bytes_to_unicode()
        vocab = json.load(open(os.path.join(TOK, "cl100k", "tokenizer.json"), encoding="utf-8"))["model"]["vocab"]
        n = 0
        for line in open(os.path.join(TOK, "cl100k", "cl100k_base.tiktoken"), encoding="ascii"):
            tok, rank = line.split()
            piece = "".join(bu[b] for b in base64.b64decode(tok))
            assert vocab[piece] == int(rank)
            n += 1
        summary["cl100k_tiktoken_ranks_equal_tokenizer_json"] = n

        seeds = {"phi3": 3, "cl100k": 100, "qwen2": 151}
        for name, ref in refs.items():
            log(f"cases {name}")
            strings = make_strings(name, 2100, seeds[name])
            rows = encode_cases(ref, strings)
            summary[f"cases_{name}"] = dump_gz(f"cases_{name}.jsonl.gz", rows)
            summary[f"cases_{name}_slow_fast_differ"] = sum(r["slow"] != r["fast"] for r in rows)
            summary[f"decode_{name}"] = dump_gz(f"decode_{name}.jsonl.gz", decode_cases(ref, seeds[name] + 1, 400))

        summary["unicode"] = dump_gz("unicode.jsonl.gz", unicode_cases(7, 600))
        rows, defs = flag_cases(tmp)
        summary["flags"] = dump_gz("flags.jsonl.gz", [{"added": defs}] + rows)

        # HealthGPT prompts, with the vocabulary extension where the reference applies it
        prompt_rows = []
        ext_rows = []
        variants = [("phi3", "phi3_instruct", refs["phi3"]), ("phi3_bos", "phi3_instruct", build_phi3(tmp, add_bos=True)),
                    ("cl100k", "phi4_instruct", refs["cl100k"]), ("qwen2", "qwen_2", refs["qwen2"])]
        for name, template, ref in variants:
            log(f"prompts {name}")
            base_len = len(ref.slow)
            n_new = healthgpt_extend(ref.slow) if name != "qwen2" else 0
            if name != "qwen2":
                assert n_new == 8195, n_new
                log("  extended slow")
                healthgpt_extend(ref.fast)
                log("  extended fast")
                ids = {t: ref.slow.convert_tokens_to_ids(t) for t in ("<start_index>", "<idx_0>", "<idx_8191>", "<end_index>", "<pixel_newline>")}
                ext_rows.append({"vocab": name, "base_len": base_len, "len": len(ref.slow), "ids": ids})
                # strings on the extended tokenizers (slow = HealthGPT path, fast for comparison)
                for t in EXT_TOKENS + ["<start_index>" + "".join(f"<idx_{k}>" for k in (5, 77, 8191)) + "<end_index>",
                                       "Answer:<start_index>x", " <idx_3> ", "<idx_3>\n<idx_4>", "text <end_index><|end|>"]:
                    ext_rows.append({"vocab": name, "text": t, "slow": ref.slow(t).input_ids, "fast": ref.fast(t).input_ids})
                # decode of a generation-like output (reference parses digits after dropping 8 chars)
                gen = [ids["<idx_0>"] + k for k in (3, 1000, 8191, 0, 42)] + [ids["<end_index>"]]
                gen += [32007] if name.startswith("phi3") else [100265]
                ext_rows.append({"vocab": name, "gen_ids": gen, "slow_dec": ref.slow.decode(gen),
                                 "slow_dec_skip": ref.slow.decode(gen, skip_special_tokens=True)})
            for turns, generation in prompt_cases(template):
                prompt = build_prompt(template, turns, generation)
                prompt_rows.append({"vocab": name, "template": template, "turns": [list(t) for t in turns],
                                    "generation": generation, "prompt": prompt,
                                    "ids": tokenizer_image_token(prompt, ref.slow)})
        summary["prompts"] = dump_gz("prompts.jsonl.gz", prompt_rows)
        summary["extension"] = dump_gz("extension.jsonl.gz", ext_rows)
    finally:
        shutil.rmtree(tmp)
    json.dump(summary, open(os.path.join(OUT, "summary.json"), "w"), indent=1, sort_keys=True)
    print(json.dumps(summary, indent=1, sort_keys=True))


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


if __name__ == "__main__":
    main()
