"""plug_lite.llm_batch: the request contract, result ingestion and the Batch API runner, against
the scripted OpenAI-protocol server (tests/scripted_openai.py) with the real openai client. The
kill -9 between ``batches.create`` and the ledger line is tested through the real CLI in
tests/test_translate.py."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from plug_lite import llm, llm_batch
from plug_lite.io import UserError
from scripted_openai import ScriptedOpenAI, user_text

KEY = "test-batch-SECRET-0123456789"


def echo(body: dict) -> dict | str:
    """Answers 'A: <question>'; a question holding 'FAIL' gets HTTP 400."""
    u = user_text(body)
    if "FAIL" in u:
        return {"status": 400, "content": f"refused {u}"}
    if "NOTEXT" in u:  # a 200 that is not a chat completion with text
        return {"body": {"object": "chat.completion", "choices": [{"message": {"content": None}}]}}
    return f"A: {u}"


def make_calls(cfg: llm.LLMSettings, n: int, *, fail: tuple[int, ...] = (), start: int = 0,
               no_text: tuple[int, ...] = ()) -> list[llm_batch.Call]:
    out = []
    for i in range(start, start + n):
        msgs = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"question {i}" + (" FAIL" if i in fail else "")
                 + (" NOTEXT" if i in no_text else "")}]
        out.append(llm_batch.Call(llm.cache_key(task="t", model=cfg.model, messages=msgs), cfg.body(msgs),
                                  {"job": "t", "id": str(i), "order": "AB"}))
    return out


def run_batch(srv, tmp_path, calls, *, wait=True, cache_name="cache.jsonl", cfg=None):
    cfg = cfg or llm.LLMSettings(model="batch-model", base_url=srv.url, api_key=KEY, max_retries=0)
    cache = llm.CallCache(tmp_path / cache_name)
    opts = llm_batch.BatchOptions(batch=True, batch_wait=wait, batch_poll=0.001)
    lines = []
    d = llm_batch.dispatch(calls, cache, opts, cfg=cfg, ledger=llm_batch.ledger_path(tmp_path / cache_name),
                           job="test", say=lines.append)
    cache.close()
    return d, llm.CallCache(tmp_path / cache_name), lines


def cached_texts(cache: llm.CallCache, calls) -> dict[str, str]:
    return {c.key: cache.get(c.key)["text"] for c in calls if c.key in cache}


def expected(c: llm_batch.Call) -> str:
    return "A: " + c.body["messages"][1]["content"]


# --- the request contract ---------------------------------------------------------------------------


def test_request_line_body_is_what_the_live_client_sends(tmp_path):
    with ScriptedOpenAI(echo) as srv:
        cfg = llm.LLMSettings(model="batch-model", base_url=srv.url, api_key=KEY)
        msgs = [{"role": "user", "content": "Hello <<<markers>>> and ünïcode 你好"}]
        llm.Client(cfg).chat(msgs)
        sent = srv.bodies[0]
    call = llm_batch.Call(llm.cache_key(messages=msgs), cfg.body(msgs))
    line = json.loads(llm_batch.request_line(call))
    assert line == {"custom_id": call.key, "method": "POST", "url": "/v1/chat/completions", "body": sent}
    assert set(sent) == {"model", "messages", "temperature", "max_tokens"} and len(call.key) == 64


def test_write_requests_only_uncached_with_manifest_and_shards(tmp_path):
    cfg = llm.LLMSettings(model="model-a", base_url="http://unused", api_key=KEY)
    other = llm.LLMSettings(model="model-b", base_url="http://unused", api_key=KEY)
    calls = make_calls(cfg, 7) + make_calls(other, 3, start=100)
    cache = llm.CallCache(tmp_path / "c.jsonl")
    cache.put(calls[0].key, {"text": "cached"})
    out = tmp_path / "req.jsonl"
    d = llm_batch.dispatch(calls, cache, llm_batch.BatchOptions(write_requests=str(out)), cfg=cfg,
                           ledger=tmp_path / "l.jsonl", job="t")
    assert d.mode == "write" and not d.finished and d.written["requests"] == 9
    # one model per file: two shards, named .001 and .002
    assert [Path(f).name for f in d.written["files"]] == ["req.001.jsonl", "req.002.jsonl"]
    lines = [json.loads(x) for f in d.written["files"] for x in Path(f).read_text().splitlines()]
    assert [x["custom_id"] for x in lines] == [c.key for c in calls[1:]]  # the cached call is left out
    assert {x["body"]["model"] for x in json.loads("[" + ",".join(Path(d.written["files"][0]).read_text().splitlines()) + "]")} == {"model-a"}
    manifest = [json.loads(x) for x in (tmp_path / "req.manifest.jsonl").read_text().splitlines()]
    assert [m["custom_id"] for m in manifest] == [x["custom_id"] for x in lines]
    assert manifest[0]["id"] == "1" and manifest[0]["order"] == "AB" and manifest[0]["file"] == "req.001.jsonl"
    assert all("id" not in x["body"] and "order" not in json.dumps(x["body"]) for x in lines)  # bookkeeping stays out
    # within the per-file limits; the same calls give the same bytes and shard hash
    small = llm_batch.shard_calls(calls[:7], max_lines=3)
    assert [len(s.calls) for s in small] == [3, 3, 1]
    one_line = len(llm_batch.request_line(calls[1]))
    by_bytes = llm_batch.shard_calls(calls[1:7], max_bytes=2 * one_line + 5)
    assert all(len(s.data) <= 2 * one_line + 5 for s in by_bytes) and sum(len(s.calls) for s in by_bytes) == 6
    assert [s.hash for s in llm_batch.shard_calls(calls[:7], max_lines=3)] == [s.hash for s in small]
    with pytest.raises(UserError, match="over the 10-byte limit"):
        llm_batch.shard_calls(calls[:1], max_bytes=10)


def test_written_shards_pass_the_servers_validation(tmp_path):
    """Several shards (small limits on both sides) each go through validation and run."""
    with ScriptedOpenAI(echo, max_lines=4) as srv:
        cfg = llm.LLMSettings(model="batch-model", base_url=srv.url, api_key=KEY, max_retries=0)
        calls = make_calls(cfg, 10)
        cache = llm.CallCache(tmp_path / "c.jsonl")
        runner = llm_batch.BatchRunner(cfg, cache, tmp_path / "l.jsonl", wait=True, poll=0.001, max_lines=4,
                                       say=lambda _: None)
        d = runner.run(calls)
        cache.close()
        assert d.by_batch == 10 and not d.failed and len(srv.batches) == 3 and srv.uploads == 3
        assert all(b["status"] == "completed" for b in srv.batches.values())
        # and what a too-big file gets from the same server: a failed batch, nothing cached
        cache = llm.CallCache(tmp_path / "c2.jsonl")
        d = llm_batch.BatchRunner(cfg, cache, tmp_path / "l2.jsonl", wait=True, poll=0.001, max_lines=5,
                                  say=lambda _: None).run(make_calls(cfg, 5, start=50))
        assert d.by_batch == 0 and len(d.failed) == 5
        assert "failed: invalid_request 5 requests, over 4" in next(iter(d.failed.values()))


# --- result lines ---------------------------------------------------------------------------------


def chat_body(text, *, vllm=False):
    body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}}
    if vllm:  # what vLLM's ChatCompletionResponse adds
        body["choices"][0].update(logprobs=None, stop_reason=None)
        body["choices"][0]["message"].update(reasoning_content=None, tool_calls=[])
        body["prompt_logprobs"] = None
    return body


def openai_line(cid, text=None, *, status=200, error=None):
    if error is not None:
        return {"id": "batch_req_1", "custom_id": cid, "response": None, "error": error}
    body = chat_body(text) if status == 200 else {"error": {"message": text, "type": "invalid_request_error",
                                                             "code": "context_length_exceeded"}}
    return {"id": "batch_req_1", "custom_id": cid, "response": {"status_code": status, "request_id": "r", "body": body},
            "error": None}


def vllm_line(cid, text=None, *, error=None):
    """vLLM run-batch's BatchRequestOutput (vllm/entrypoints/openai/run_batch.py)."""
    if error is not None:  # make_error_request_output: status 400, no body, the message as a string
        return {"id": "vllm-abc", "custom_id": cid, "response": {"status_code": 400, "request_id": "vllm-batch-1",
                                                                  "body": None}, "error": error}
    return {"id": "vllm-abc", "custom_id": cid, "response": {"status_code": 200, "request_id": "vllm-batch-1",
                                                              "body": chat_body(text, vllm=True)}, "error": None}


def test_parse_result_lines():
    ok = llm_batch.parse_result(openai_line("k", "hello"), "f:1")
    assert (ok.text, ok.error, ok.usage, ok.finish_reason) == ("hello", None, {"prompt": 11, "completion": 5}, "stop")
    bad = llm_batch.parse_result(openai_line("k", "too long", status=400), "f:2")
    assert bad.text is None and bad.error == "HTTP 400: context_length_exceeded: too long" and not bad.not_run
    exp = llm_batch.parse_result(openai_line("k", error={"code": "batch_expired", "message": "window closed"}), "f:3")
    assert exp.text is None and exp.not_run and exp.error == "batch_expired: window closed"
    v = llm_batch.parse_result(vllm_line("k", error="Model not found"), "f:4")
    assert v.text is None and v.error == "Model not found" and not v.not_run
    assert llm_batch.parse_result(vllm_line("k", "hi"), "f:5").text == "hi"
    empty = openai_line("k", "")  # text, as from a live call (what it is worth is the job's to judge)
    assert llm_batch.parse_result(empty, "f:6").text == ""
    empty["response"]["body"]["choices"][0]["message"]["content"] = None
    assert llm_batch.parse_result(empty, "f:7").error == ("status 200 but the reply has no text "
                                                          "(choices[0].message.content is null)")
    empty["response"]["body"] = {"choices": []}
    assert "not a chat completion" in llm_batch.parse_result(empty, "f:7").error
    with pytest.raises(UserError, match=r"^f:8: a request line, not a result line"):
        llm_batch.parse_result({"custom_id": "k", "method": "POST", "url": "/v1/chat/completions", "body": {}}, "f:8")
    with pytest.raises(UserError, match=r"^f:9: missing field 'custom_id'"):
        llm_batch.parse_result({"response": None}, "f:9")


def test_read_results_vllm_shape_gives_the_same_cache_as_openai_shape(tmp_path):
    cfg = llm.LLMSettings(model="m", base_url="http://unused", api_key=KEY)
    calls = make_calls(cfg, 6)
    texts = {c.key: expected(c) for c in calls}
    failing = calls[4].key
    oa_out = tmp_path / "oa_output.jsonl"
    oa_err = tmp_path / "oa_errors.jsonl"
    oa_out.write_text("".join(json.dumps(openai_line(k, t)) + "\n" for k, t in texts.items() if k != failing))
    oa_err.write_text(json.dumps(openai_line(failing, "refused", status=400)) + "\n")
    vl = tmp_path / "vllm_results.jsonl"
    vl.write_text("".join(json.dumps(vllm_line(k, t) if k != failing else vllm_line(k, error="refused")) + "\n"
                          for k, t in texts.items()))
    caches = {}
    for name, files in (("oa", [str(oa_out), str(oa_err)]), ("vllm", [str(vl)])):
        cache = llm.CallCache(tmp_path / f"{name}.jsonl")
        d = llm_batch.dispatch(calls, cache, llm_batch.BatchOptions(read_results=files), cfg=None,
                               ledger=tmp_path / "l.jsonl", job="t")
        cache.close()
        assert d.mode == "read" and d.finished and d.by_batch == 5 and list(d.failed) == [failing]
        recs = [json.loads(x) for x in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        caches[name] = {r["key"]: (r["text"], r["usage"], r["model"], r["finish_reason"]) for r in recs}
    assert caches["oa"] == caches["vllm"] and len(caches["oa"]) == 5 and failing not in caches["oa"]
    assert caches["oa"][calls[0].key][0] == "A: question 0"
    # the next --write-requests holds exactly the failed call
    cache = llm.CallCache(tmp_path / "oa.jsonl")
    d = llm_batch.dispatch(calls, cache, llm_batch.BatchOptions(write_requests=str(tmp_path / "again.jsonl")),
                           cfg=None, ledger=tmp_path / "l.jsonl", job="t")
    assert [json.loads(x)["custom_id"] for x in (tmp_path / "again.jsonl").read_text().splitlines()] == [failing]
    # a result file that is not one: a one-line error naming file and line; the lines before it are kept
    (tmp_path / "bad.jsonl").write_text(json.dumps(openai_line(calls[0].key, "x")) + "\n{not json\n")
    fresh = llm.CallCache(tmp_path / "fresh.jsonl")
    with pytest.raises(UserError, match=r"bad.jsonl:2: not a JSON line"):
        llm_batch.dispatch(calls, fresh, llm_batch.BatchOptions(read_results=[str(tmp_path / "bad.jsonl")]),
                           cfg=None, ledger=tmp_path / "l.jsonl", job="t")
    fresh.close()
    assert llm.CallCache(tmp_path / "fresh.jsonl").get(calls[0].key)["text"] == "x"


def test_options_that_cannot_go_together():
    with pytest.raises(UserError, match="--write-requests and --batch cannot go together"):
        llm_batch.BatchOptions(write_requests="x", batch=True).check()
    with pytest.raises(UserError, match="--batch-wait needs --batch"):
        llm_batch.BatchOptions(batch_wait=True).check()
    assert llm_batch.BatchOptions().check().mode == "live"
    with pytest.raises(UserError, match="--batch-url must be a path"):
        llm_batch.BatchOptions(batch=True, batch_url="chat/completions").check()


def test_azure_url_in_lines_and_batch(tmp_path):
    """--batch-url /chat/completions (Azure OpenAI): the lines and the batch's endpoint agree."""
    with ScriptedOpenAI(echo) as srv:
        cfg = llm.LLMSettings(model="my-batch-deployment", base_url=srv.url, api_key=KEY, max_retries=0)
        calls = make_calls(cfg, 3)
        cache = llm.CallCache(tmp_path / "c.jsonl")
        opts = llm_batch.BatchOptions(batch=True, batch_wait=True, batch_poll=0.001, batch_url="/chat/completions")
        d = llm_batch.dispatch(calls, cache, opts, cfg=cfg, ledger=tmp_path / "l.jsonl", job="t", say=lambda _: None)
        (b,) = srv.batches.values()
        first = json.loads(srv.file_data[b["input_file_id"]].splitlines()[0])
    assert d.by_batch == 3 and b["endpoint"] == first["url"] == "/chat/completions"
    assert first["body"]["model"] == "my-batch-deployment"


# --- the Batch API runner ---------------------------------------------------------------------------


def test_shuffled_duplicated_and_error_lines(tmp_path):
    """Output in another order, one line written twice, non-200 lines only in the error file."""
    with ScriptedOpenAI(echo, batch_lines_per_poll=4, batch_fates=[
            {"shuffle": True, "duplicate": lambda cid: True}]) as srv:
        calls = make_calls(llm.LLMSettings(model="batch-model", base_url=srv.url, api_key=KEY), 12, fail=(3, 7))
        d, cache, said = run_batch(srv, tmp_path, calls)
        (b,) = srv.batches.values()
        out = srv.file_data[b["output_file_id"]].decode().splitlines()
        err = srv.file_data[b["error_file_id"]].decode().splitlines()
    fails = {calls[3].key, calls[7].key}
    assert [json.loads(x)["custom_id"] for x in out][:10] != [c.key for c in calls if c.key not in fails]  # shuffled
    assert {json.loads(x)["custom_id"] for x in err} == fails and not fails & {json.loads(x)["custom_id"] for x in out}
    assert d.by_batch == 10 and set(d.failed) == fails and d.failed[calls[3].key].startswith("HTTP 400: refused")
    assert d.counts["duplicates"] == 12  # every line twice; each cached once
    assert cached_texts(cache, calls) == {c.key: expected(c) for c in calls if c.key not in fails}
    assert len((tmp_path / "cache.jsonl").read_text().splitlines()) == 10
    assert any("in_progress" in line for line in said) and any("10 answers cached, 2 failed" in x for x in said)


def test_a_line_missing_from_both_files_is_retried_by_the_next_run(tmp_path):
    with ScriptedOpenAI(echo, batch_fates=[{"drop": lambda cid, k=[]: k.append(cid) or len(k) == 2}]) as srv:
        calls = make_calls(llm.LLMSettings(model="batch-model", base_url=srv.url, api_key=KEY), 5)
        d, cache, _ = run_batch(srv, tmp_path, calls)
        (missing,) = d.failed
        assert "returned no line for this call" in d.failed[missing] and missing not in cache
        cache.close()
        d2, cache, _ = run_batch(srv, tmp_path, calls)
        assert d2.by_batch == 1 and not d2.failed and len(srv.batches) == 2
        assert srv.batch_lines[missing] == 2 and sum(srv.batch_lines.values()) == 6  # only the missing one again
    assert cached_texts(cache, calls) == {c.key: expected(c) for c in calls}


def test_expired_batch_partial_results_then_the_rest_resubmitted(tmp_path):
    with ScriptedOpenAI(echo, batch_lines_per_poll=2, batch_fates=[{"expire_after": 4}]) as srv:
        calls = make_calls(llm.LLMSettings(model="batch-model", base_url=srv.url, api_key=KEY), 10)
        d, cache, said = run_batch(srv, tmp_path, calls)
        first, second = srv.batches.values()
    assert first["status"] == "expired" and first["request_counts"]["completed"] == 4
    assert second["status"] == "completed" and second["request_counts"]["total"] == 6
    assert d.by_batch == 10 and not d.failed and max(srv.batch_lines.values()) == 1
    assert cached_texts(cache, calls) == {c.key: expected(c) for c in calls}
    assert any("expired; 4 answers cached, 0 failed, 6 to resubmit" in x for x in said)


def test_a_second_run_on_the_same_ledger_is_refused_while_the_first_holds_it(tmp_path):
    """Two runs of one job at once (a second terminal, a notebook cell run twice) would submit the
    same shards twice and pay twice: the second is one line while the first holds the ledger."""
    import fcntl

    with ScriptedOpenAI(echo) as srv:
        calls = make_calls(llm.LLMSettings(model="batch-model", base_url=srv.url, api_key=KEY), 3)
        ledger = llm_batch.ledger_path(tmp_path / "cache.jsonl")
        with open(ledger.with_name(ledger.name + ".lock"), "a") as held:  # the first run, mid-way
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with pytest.raises(UserError, match=r"another run is submitting or collecting these batches"):
                run_batch(srv, tmp_path, calls)
        assert srv.routes["POST /batches"] == 0 and srv.routes["POST /files"] == 0
        d, cache, _ = run_batch(srv, tmp_path, calls)  # once it has ended, the run goes through
    assert d.by_batch == 3 and all(c.key in cache for c in calls) and srv.routes["POST /batches"] == 1


def test_without_wait_a_rerun_collects_and_a_cancelled_batch_is_resubmitted(tmp_path):
    with ScriptedOpenAI(echo, batch_lines_per_poll=3) as srv:
        calls = make_calls(llm.LLMSettings(model="batch-model", base_url=srv.url, api_key=KEY), 9)
        d, cache, _ = run_batch(srv, tmp_path, calls, wait=False)
        assert d.pending and not d.finished and d.by_batch == 0 and len(srv.batches) == 1
        cache.close()
        d, cache, _ = run_batch(srv, tmp_path, calls, wait=False)  # in_progress: 3 lines ran
        assert d.pending == list(srv.batches) and len(srv.batches) == 1  # polled, not submitted again
        cache.close()
        # the user cancels it in the console; the next run takes its 3 answers and resubmits 6
        client = openai.OpenAI(base_url=srv.url, api_key=KEY)
        assert client.batches.cancel(d.pending[0]).status == "cancelling"
        d, cache, said = run_batch(srv, tmp_path, calls, wait=True)
        assert d.finished and d.by_batch == 9 and not d.failed
        assert any("cancelled; 3 answers cached, 0 failed, 6 to resubmit" in x for x in said)
        first, second = srv.batches.values()
        assert first["status"] == "cancelled" and second["request_counts"]["total"] == 6
        assert max(srv.batch_lines.values()) == 1 and srv.routes["POST /batches"] == 2
    assert cached_texts(cache, calls) == {c.key: expected(c) for c in calls}


def test_a_200_line_without_text_is_a_failure_not_cached(tmp_path):
    with ScriptedOpenAI(echo) as srv:
        calls = make_calls(llm.LLMSettings(model="batch-model", base_url=srv.url, api_key=KEY), 2, no_text=(1,))
        d, cache, _ = run_batch(srv, tmp_path, calls)
    assert d.by_batch == 1 and calls[0].key in cache and calls[1].key not in cache
    assert d.failed == {calls[1].key: "status 200 but the reply has no text (choices[0].message.content is null)"}


def test_a_failed_batch_caches_nothing_and_names_the_reason(tmp_path):
    with ScriptedOpenAI(echo, batch_fates=[{"fail": "the input file is not valid JSONL"}]) as srv:
        calls = make_calls(llm.LLMSettings(model="batch-model", base_url=srv.url, api_key=KEY), 3)
        d, cache, _ = run_batch(srv, tmp_path, calls)
    assert d.by_batch == 0 and len(d.failed) == 3 and not any(c.key in cache for c in calls)
    assert "invalid_request the input file is not valid JSONL" in d.failed[calls[0].key]


def test_a_key_given_on_the_command_line_is_masked_in_batch_reasons(tmp_path, monkeypatch):
    """A server that repeats the key in a failed batch's reason: the key given as --api-key (not
    only one from the environment) never reaches the reasons the run prints and keeps."""
    for var in ("OPENAI_API_KEY", "PLUG_LITE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    with ScriptedOpenAI(echo, batch_fates=[{"fail": f"key {KEY} may not run batches"}]) as srv:
        calls = make_calls(llm.LLMSettings(model="batch-model", base_url=srv.url, api_key=KEY), 2)
        d, _, said = run_batch(srv, tmp_path, calls)
    reasons = list(d.failed.values())
    assert len(reasons) == 2 and all("key *** may not run batches" in r and KEY not in r for r in reasons)
    assert KEY not in "".join(said) + "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())


def test_no_batch_api_a_wrong_key_or_no_server_is_one_line(tmp_path):
    with ScriptedOpenAI(echo, batch_api=False) as srv:  # vLLM's and llama.cpp's servers have no /v1/batches
        with pytest.raises(UserError, match=r"HTTP 404 .* for listing batches: this endpoint may have no Batch API "
                                            r"\(.*use --write-requests and vllm run-batch\)"):
            run_batch(srv, tmp_path, make_calls(llm.LLMSettings(model="m", base_url=srv.url, api_key=KEY), 2))
    with ScriptedOpenAI(echo, require_key="the-right-key") as srv:
        with pytest.raises(llm.FatalLLMError) as e:
            run_batch(srv, tmp_path, make_calls(llm.LLMSettings(model="m", base_url=srv.url, api_key=KEY), 2))
        assert "refused the API key (HTTP 401)" in str(e.value) and KEY not in str(e.value)
        assert sum(srv.routes.values()) == 1 and not srv.batches  # stopped at the first request
    cfg = llm.LLMSettings(model="m", base_url=srv.url, api_key=KEY, max_retries=0)  # the server is gone
    with pytest.raises(UserError, match="cannot reach .* for listing batches"):
        run_batch(None, tmp_path, make_calls(cfg, 2), cfg=cfg)


def test_a_batches_create_that_times_out_is_not_retried_into_a_second_batch(tmp_path):
    """The server creates the batch but its answer never comes (a timeout, a dropped connection, a
    gateway's 5xx). The openai client sends no idempotency key and would POST /batches again: two
    batches for one shard, both paid. The runner looks for the shard's tag instead and adopts it."""
    with ScriptedOpenAI(echo, hold_create=True) as srv:
        cfg = llm.LLMSettings(model="batch-model", base_url=srv.url, api_key=KEY, max_retries=2, timeout=0.5)
        calls = make_calls(cfg, 3)
        d, cache, said = run_batch(srv, tmp_path, calls, cfg=cfg)
        assert len(srv.batches) == 1 and srv.routes["POST /batches"] == 1  # one shard, one batch
        assert d.by_batch == 3 and not d.failed and any("found by its tag" in x for x in said)
        assert max(srv.batch_lines.values()) == 1
    assert cached_texts(cache, calls) == {c.key: expected(c) for c in calls}


def test_a_result_file_gone_at_the_provider_fails_those_calls_instead_of_blocking_every_rerun(tmp_path):
    """A completed batch whose output file the provider no longer has (deleted, or past its
    output_expires_after): its calls failed (a rerun submits them again), and the run goes on,
    instead of a 404 that stops this and every later run."""
    with ScriptedOpenAI(echo) as srv:
        calls = make_calls(llm.LLMSettings(model="batch-model", base_url=srv.url, api_key=KEY), 4)
        d, cache, _ = run_batch(srv, tmp_path, calls, wait=False)
        cache.close()
        client = openai.OpenAI(base_url=srv.url, api_key=KEY)
        while (b := client.batches.retrieve(d.pending[0])).status != "completed":
            pass
        del srv.files[b.output_file_id]
        d, cache, said = run_batch(srv, tmp_path, calls)
        cache.close()
        assert d.by_batch == 0 and set(d.failed) == {c.key for c in calls} and len(srv.batches) == 1
        assert f"result file {b.output_file_id} is gone" in d.failed[calls[0].key]
        assert any(f"{b.output_file_id} is gone" in x for x in said)
        d, cache, _ = run_batch(srv, tmp_path, calls)  # the rerun submits them again
        assert d.by_batch == 4 and not d.failed and len(srv.batches) == 2
    assert cached_texts(cache, calls) == {c.key: expected(c) for c in calls}
