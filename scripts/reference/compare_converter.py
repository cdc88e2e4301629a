#!/usr/bin/env python3
"""Compares `manners export --format gguf` with llama.cpp's own converter on the same folder.

    python3 scripts/reference/compare_converter.py --llama-cpp LLAMA_CPP_DIR --model MODEL_DIR \
        [--pre gpt-2] [--manners target/release/manners] [--out docs/gguf-check/converter-X.json]

LLAMA_CPP_DIR holds `convert_hf_to_gguf.py`, `conversion/` and `gguf-py/` (a llama.cpp checkout,
or the copy vendored in llama-cpp-python's sdist: `vendor/llama.cpp`). Both files are written in
f32; then, with gguf-py's reader:
1. every tensor: the same names, shapes and types, and the largest absolute difference of values;
2. every metadata key: present in both, and equal (arrays element by element).
`general.*` keys (names, file type, sizes, sources) describe the export, not the model, and are
listed but not judged. The chat template is compared with the converter's after removing
`{% generation %}` / `{% endgeneration %}` (manners exports the inference form). Keys only one
side writes are listed; they fail the check only when they are tensors.

llama.cpp's converter recognises a pre-tokenizer by hashing the tokenizer's output on a test text,
so a tokenizer it has not seen (the project's own base model) stops it; `--pre` names the
pre-tokenizer for that case (manners writes `gpt-2` for GPT-2's byte-level regex); `--pre manners`
takes the name manners wrote, so that everything else is still compared.

Needs torch, transformers and numpy. CI never runs it; its output is committed in docs/.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np


def convert_with_llama_cpp(llama_cpp, model_dir, out, pre):
    sys.path.insert(0, llama_cpp)
    sys.path.insert(0, os.path.join(llama_cpp, "gguf-py"))
    import importlib.util

    import conversion.base as base

    if pre:
        base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
    spec = importlib.util.spec_from_file_location("convert_hf_to_gguf",
                                                  os.path.join(llama_cpp, "convert_hf_to_gguf.py"))
    conv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conv)
    argv = sys.argv
    sys.argv = ["convert_hf_to_gguf.py", model_dir, "--outtype", "f32", "--outfile", out]
    try:
        conv.main()
    finally:
        sys.argv = argv


def field_value(field):
    import gguf

    t = field.types[0] if field.types else None
    if t == gguf.GGUFValueType.ARRAY:
        return [field.contents(i) for i in range(len(field.data))]
    return field.contents()


GENERATION_TAG = re.compile(r"\{%-?\s*(end)?generation\s*-?%\}")


def same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(a)))
    return a == b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--pre")
    ap.add_argument("--manners", default="target/release/manners")
    ap.add_argument("--out")
    a = ap.parse_args()

    tmp = tempfile.mkdtemp()
    ref_path = os.path.join(tmp, "llama-cpp.gguf")
    ours_path = os.path.join(tmp, "manners.gguf")
    subprocess.run([a.manners, "export", "--format", "gguf", "--dtype", "f32", "--run", a.model,
                    "--out", ours_path], check=True, capture_output=True)
    sys.path.insert(0, os.path.join(os.path.abspath(a.llama_cpp), "gguf-py"))
    import gguf

    if a.pre == "manners":
        a.pre = gguf.GGUFReader(ours_path).fields["tokenizer.ggml.pre"].contents()
    convert_with_llama_cpp(os.path.abspath(a.llama_cpp), a.model, ref_path, a.pre)

    ref, ours = gguf.GGUFReader(ref_path), gguf.GGUFReader(ours_path)
    rt = {t.name: t for t in ref.tensors}
    ot = {t.name: t for t in ours.tensors}
    tensors = {
        "only_llama_cpp": sorted(set(rt) - set(ot)),
        "only_manners": sorted(set(ot) - set(rt)),
        "shape_or_type_differs": [],
        "max_abs_diff": 0.0,
        "count": len(set(rt) & set(ot)),
    }
    for name in sorted(set(rt) & set(ot)):
        r, o = rt[name], ot[name]
        if list(r.shape) != list(o.shape) or r.tensor_type != o.tensor_type:
            tensors["shape_or_type_differs"].append(
                [name, list(map(int, r.shape)), list(map(int, o.shape)), r.tensor_type.name,
                 o.tensor_type.name])
            continue
        d = np.abs(np.asarray(r.data, dtype=np.float64) - np.asarray(o.data, dtype=np.float64))
        tensors["max_abs_diff"] = max(tensors["max_abs_diff"], float(d.max()) if d.size else 0.0)

    skip = lambda k: k.startswith("GGUF.") or k.startswith("general.")
    rk = {k: f for k, f in ref.fields.items() if not skip(k)}
    ok_ = {k: f for k, f in ours.fields.items() if not skip(k)}
    metadata = {
        "only_llama_cpp": sorted(set(rk) - set(ok_)),
        "only_manners": sorted(set(ok_) - set(rk)),
        "differs": {},
        "equal": [],
        "general_llama_cpp": sorted(k for k in ref.fields if k.startswith("general.")),
        "general_manners": sorted(k for k in ours.fields if k.startswith("general.")),
    }
    for k in sorted(set(rk) & set(ok_)):
        rv, ov = field_value(rk[k]), field_value(ok_[k])
        if isinstance(rv, list) and isinstance(ov, list):
            eq = len(rv) == len(ov) and all(same(x, y) for x, y in zip(rv, ov))
            if not eq:
                first = next((i for i, (x, y) in enumerate(zip(rv, ov)) if not same(x, y)),
                             min(len(rv), len(ov)))
                metadata["differs"][k] = {"len": [len(rv), len(ov)], "first_index": first,
                                          "llama_cpp": repr(rv[first])[:80] if first < len(rv) else None,
                                          "manners": repr(ov[first])[:80] if first < len(ov) else None}
        elif k == "tokenizer.chat_template":
            # llama.cpp's converter copies the template as it is; manners drops the
            # `{% generation %}` markers (training-only, unknown to most inference engines).
            eq = GENERATION_TAG.sub("", rv) == ov
            if not eq:
                metadata["differs"][k] = {"llama_cpp": rv[:300], "manners": ov[:300]}
        else:
            eq = same(rv, ov)
            if not eq:
                metadata["differs"][k] = {"llama_cpp": repr(rv)[:200], "manners": repr(ov)[:200]}
        if eq:
            metadata["equal"].append(k)

    ok = (not tensors["only_llama_cpp"] and not tensors["only_manners"]
          and not tensors["shape_or_type_differs"] and tensors["max_abs_diff"] == 0.0
          and not metadata["differs"])
    # Extra keys are allowed, missing ones are listed for the reader.
    result = {"model": a.model, "pre": a.pre, "tensors": tensors, "metadata": metadata, "ok": ok}
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
