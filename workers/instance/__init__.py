"""One model instance: a process that hosts exactly one `llama_cpp.Llama` (DESIGN invariant 4).

Started by the supervisor as ``python -m workers.instance --state-dir S --handle H``
(`__main__`):

- stdin: one JSON line, the spec (instance id, model, llama kwargs, ...). The process imports
  llama_cpp *before* reading it, so the supervisor keeps one such process waiting as a spare and
  a load skips the import. EOF on stdin (the supervisor dismissed the spare, or died): exit.
- stdout: events for the supervisor, JSON lines: ``{"event": "progress", "progress": p}``
  (from llama.cpp's own loader callback), then ``{"event": "loaded", ...}`` or
  ``{"event": "failed", "message": ...}``. If the supervisor is gone while loading (the pipe is
  broken), the load is abandoned and the process exits: nobody could adopt it.
- stderr: ``<state>/logs/<handle>.log``, opened by the supervisor. llama.cpp writes its reasons
  for a failed load there; the supervisor quotes the tail in the error.

Once loaded it serves ``<state>/instances/<handle>.sock`` (`server.Instance`): ``info`` and
``status`` are answered at once; inference jobs (`jobs.run_job`) go through a bounded queue to
one executor thread, so one request runs at a time and `status` knows whether it is busy (TTL
and eviction never cut a request in flight). ``shutdown`` (or SIGTERM) stops accepting, lets
the running job finish within the given timeout, fails queued jobs and exits.
"""
