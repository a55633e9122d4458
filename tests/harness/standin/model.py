"""Generate a tiny, deterministic, random-weight GGUF model for llama-server.

The model replaces Qwen3-30B-A3B in tests, because that model is about 61 GB
and cannot run on the test machines. It is a llama-architecture network with 2
layers, 64 wide, all tensors F32, so the file stays under 1 MB (about 650 KB)
and llama-server generates hundreds to thousands of tokens/s on a 2-core CPU.
Its text is meaningless, but everything around it is real: tokenizer, ChatML
chat template, sampling, streaming and usage counts.

Two properties make replies predictable for tests:

- The output rows of every token that is not a NORMAL token (control, byte and
  unknown tokens) are zero, while NORMAL rows are large. Those tokens then get a
  logit of exactly 0 against a spread of about +-20, so the sampler never picks
  them: replies contain only whole ASCII tokens, which are valid UTF-8, and
  never contain the end-of-turn token, so every reply runs to `max_tokens`.
- The weights come from a fixed seed, so the same generator version always
  writes the same bytes.

Run as a script to write the file: `python -m tests.harness.standin.model OUT`.
"""

from __future__ import annotations

import argparse
import string
import sys
from pathlib import Path

import gguf
import numpy as np

ARCHITECTURE = "llama"
SEED = 20240601

VOCABULARY_WORDS = (
    "the be to of and in that have it for not on with he as you do at this but his by from they we "
    "say her she or an will my one all would there their what so up out if about who get which go me "
    "when make can like time no just him know take people into year your good some could them see "
    "other than then now look only come its over think also back after use two how our work first "
    "well way even new want because any these give day most us model token server health vllm llama "
    "box agent stack test reply stream chunk usage"
).split()

N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_HEAD_KV = 4
N_FF = 128
CONTEXT_LENGTH = 32768
RMS_EPS = 1e-5
ROPE_FREQ_BASE = 10000.0

# ChatML, the format Qwen models use. llama-server renders it with its Jinja
# engine and stops at <|im_end|>, which this model never produces.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

SPACE_MARK = "\u2581"  # SentencePiece's word-boundary marker, shown as a space.


def build_vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Return the token texts, scores and types of a SentencePiece-style vocabulary.

    The order is: <unk>, <s>, </s>, the ChatML markers, the 256 byte tokens
    (byte fallback for any character without a token of its own), and then the
    NORMAL tokens: the word-boundary marker, each printable ASCII character, and
    a few hundred words with and without a leading marker. A higher score makes
    the tokenizer merge into that token first, so longer tokens get higher scores.
    """
    tokens: list[str] = []
    scores: list[float] = []
    types: list[int] = []

    def add(text: str, token_type: gguf.TokenType, score: float = 0.0) -> None:
        tokens.append(text)
        scores.append(score)
        types.append(int(token_type))

    add("<unk>", gguf.TokenType.UNKNOWN)
    add("<s>", gguf.TokenType.CONTROL)
    add("</s>", gguf.TokenType.CONTROL)
    add("<|im_start|>", gguf.TokenType.CONTROL)
    add("<|im_end|>", gguf.TokenType.CONTROL)
    for byte in range(256):
        add(f"<0x{byte:02X}>", gguf.TokenType.BYTE)

    normal: list[str] = [SPACE_MARK]
    normal += [ch for ch in string.printable if ch.isprintable() and ch != " "]
    normal += [SPACE_MARK + ch for ch in string.ascii_lowercase]
    for word in VOCABULARY_WORDS:
        normal += [SPACE_MARK + word, word]

    seen: set[str] = set()
    for text in normal:
        if text in seen:
            continue
        seen.add(text)
        add(text, gguf.TokenType.NORMAL, score=float(len(text)))

    return tokens, scores, types


def _normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    return (rng.standard_normal(shape) * std).astype(np.float32)


def build_tensors(token_types: list[int]) -> dict[str, np.ndarray]:
    """Return the model's tensors by GGUF name, as F32 arrays in numpy row-major shape.

    numpy's shape is GGML's dimension list reversed: `token_embd.weight` with
    shape (n_vocab, n_embd) is GGML's {n_embd, n_vocab}.
    """
    rng = np.random.default_rng(SEED)
    n_vocab = len(token_types)
    head_dim = N_EMBD // N_HEAD
    kv_width = head_dim * N_HEAD_KV

    tensors: dict[str, np.ndarray] = {
        "token_embd.weight": _normal(rng, (n_vocab, N_EMBD), 1.0),
        "output_norm.weight": np.ones(N_EMBD, dtype=np.float32),
    }
    for layer in range(N_LAYER):
        prefix = f"blk.{layer}"
        tensors[f"{prefix}.attn_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
        tensors[f"{prefix}.attn_q.weight"] = _normal(rng, (N_EMBD, N_EMBD), 0.1)
        tensors[f"{prefix}.attn_k.weight"] = _normal(rng, (kv_width, N_EMBD), 0.1)
        tensors[f"{prefix}.attn_v.weight"] = _normal(rng, (kv_width, N_EMBD), 0.1)
        tensors[f"{prefix}.attn_output.weight"] = _normal(rng, (N_EMBD, N_EMBD), 0.1)
        tensors[f"{prefix}.ffn_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
        tensors[f"{prefix}.ffn_gate.weight"] = _normal(rng, (N_FF, N_EMBD), 0.1)
        tensors[f"{prefix}.ffn_up.weight"] = _normal(rng, (N_FF, N_EMBD), 0.1)
        tensors[f"{prefix}.ffn_down.weight"] = _normal(rng, (N_EMBD, N_FF), 0.1)

    # The final hidden state is RMS-normalised, so its length is about 8
    # (sqrt(64)). Unit-variance NORMAL rows give logits with a standard
    # deviation near 8, far above the exact 0 of the zeroed rows.
    output = _normal(rng, (n_vocab, N_EMBD), 1.0)
    not_normal = np.array(token_types) != int(gguf.TokenType.NORMAL)
    output[not_normal, :] = 0.0
    tensors["output.weight"] = output
    return tensors


def write_model(path: Path | str, name: str = "bestbox-standin-tiny") -> Path:
    """Write the tiny model to `path` and return the path.

    The same generator code always writes byte-identical files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, scores, types = build_vocabulary()
    eos_id = tokens.index("<|im_end|>")

    writer = gguf.GGUFWriter(path, ARCHITECTURE)
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(CONTEXT_LENGTH)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_rope_freq_base(ROPE_FREQ_BASE)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_vocab_size(len(tokens))

    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(tokens.index("<unk>"))
    writer.add_bos_token_id(tokens.index("<s>"))
    writer.add_eos_token_id(eos_id)
    writer.add_eot_token_id(eos_id)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    for tensor_name, data in build_tensors(types).items():
        writer.add_tensor(tensor_name, data)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="path of the .gguf file to write")
    args = parser.parse_args(argv)
    path = write_model(args.output)
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
