"""llama.cpp side of `cargo bench --bench inference`, in llama-bench's pp/tg style.

Prints one JSON line: {"threads", "prefill_tokens_per_s", "decode_tokens_per_s"}.
Needs llama-cpp-python (`pip install llama-cpp-python` builds llama.cpp locally).
"""
import json
import sys
import time

from llama_cpp import Llama

model, threads, n_prompt, n_gen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
prompt_tokens = json.loads(sys.stdin.read())[:n_prompt]
llm = Llama(model_path=model, n_threads=threads, n_threads_batch=threads, n_ctx=1024,
            n_batch=512, n_ubatch=512, verbose=False)

def best(f, reps=3):
    return min(f() for _ in range(reps))

def prefill():
    llm.reset()
    t = time.perf_counter()
    llm.eval(prompt_tokens)
    return time.perf_counter() - t

def decode():
    # tg: n_gen single-token steps from an empty context, as llama-bench's tg128.
    llm.reset()
    t = time.perf_counter()
    tok = prompt_tokens[0]
    for _ in range(n_gen):
        llm.eval([tok])
    return time.perf_counter() - t

prefill()  # warm-up
pp = best(prefill)
tg = best(decode)
print(json.dumps({"threads": threads, "prefill_tokens_per_s": len(prompt_tokens) / pp,
                  "decode_tokens_per_s": n_gen / tg}))
