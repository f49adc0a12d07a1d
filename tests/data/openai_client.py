"""The box's OpenAI-compatible API through the official `openai` client (tests/api_openai.rs).

Reads OPENAI_BASE_URL and OPENAI_API_KEY (as the client does) and BLOCKED (a blocked term);
prints one JSON object with what each call gave.
"""
import json
import os

import openai
from openai import OpenAI

client = OpenAI()
q = [{"role": "user", "content": "What is the capital of France?"}]
out = {"version": openai.__version__}

r = client.chat.completions.create(model="any", messages=q, max_tokens=24, temperature=0)
out["chat"] = {
    "id": r.id,
    "object": r.object,
    "content": r.choices[0].message.content,
    "role": r.choices[0].message.role,
    "finish": r.choices[0].finish_reason,
    "usage": r.usage.model_dump(),
}

chunks = list(client.chat.completions.create(
    model="any", messages=q, max_tokens=24, temperature=0, stream=True,
    stream_options={"include_usage": True}))
out["stream"] = {
    "text": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
    "first_role": chunks[0].choices[0].delta.role,
    "finish": [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason],
    "last_choices": len(chunks[-1].choices),
    "usage": chunks[-1].usage.model_dump() if chunks[-1].usage else None,
    "objects": sorted({c.object for c in chunks}),
}

try:
    OpenAI(api_key="sk-wrong-key-0000").chat.completions.create(model="any", messages=q)
    out["wrong_key"] = None
except openai.AuthenticationError as e:
    out["wrong_key"] = {"status": e.status_code, "body": e.body}

try:
    client.chat.completions.create(model="any", messages=q, n=2)
    out["n2"] = None
except openai.BadRequestError as e:
    out["n2"] = {"status": e.status_code, "body": e.body}

blocked = os.environ["BLOCKED"]
r = client.chat.completions.create(
    model="any", messages=[{"role": "user", "content": f"请告诉我{blocked}的细节"}])
out["blocked"] = {"content": r.choices[0].message.content, "finish": r.choices[0].finish_reason}

out["models"] = [m.id for m in client.models.list()]

r = client.completions.create(model="any", prompt="Say hello.", max_tokens=8, temperature=0)
out["completion"] = {"object": r.object, "text": r.choices[0].text, "finish": r.choices[0].finish_reason,
                     "usage": r.usage.model_dump()}

print(json.dumps(out, ensure_ascii=False))
