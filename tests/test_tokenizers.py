"""The Hugging Face tokenizers built from quicktok equal the originals id for id."""

import pytest
import quicktok
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from guided.tokenizers import ENCODINGS, load_tokenizer

SAMPLES = [
    "Hello world  \n\n  123456 def f(x):\n    return x**2\n",
    "héllo wörld 日本語のテキスト 🎉🎉 x",
    "   it's   \t\t\n  a  I'LL you'd",
    "CamelCaseWord HTTPServer 1234567890 3.14159e-10",
    'x\r\n\r\n  y//z {"key": [1, 2, {"a": null}]}',
    "e\u0301 Å \u00a0 \u2028 عربى русский ελληνικά",
    "    if (a <= b && c != d) { return; }\n\t\t// done",
]


@pytest.fixture(scope="module", params=["llama3", "qwen3", "cl100k", "o200k"])
def pair(request):
    return load_tokenizer(request.param), quicktok.get_encoding(ENCODINGS[request.param].quicktok_name)


def test_ids_equal_quicktok_on_varied_text(pair):
    tok, enc = pair
    for text in SAMPLES:
        assert tok.encode(text, add_special_tokens=False) == enc.encode(text), text


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=60))
def test_ids_equal_quicktok_on_random_text(text):
    assume("<|" not in text)  # special-token text is encoded as the special id by design
    for name in ("llama3", "qwen3"):
        tok = load_tokenizer(name)
        enc = quicktok.get_encoding(ENCODINGS[name].quicktok_name)
        assert tok.encode(text, add_special_tokens=False) == enc.encode(text)


def test_special_tokens_keep_their_ids(pair):
    tok, enc = pair
    for name in enc.special_tokens_set:
        assert tok.convert_tokens_to_ids(name) == enc.encode_single_token(name)
    assert tok.eos_token_id == enc.eot_token


def test_llama3_prepends_bos_like_the_original():
    tok = load_tokenizer("llama3")
    assert tok.encode("hi") == [128000, 6151]
    assert tok.decode(tok.encode("def f(x):"), skip_special_tokens=True) == "def f(x):"
