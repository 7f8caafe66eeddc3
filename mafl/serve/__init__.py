"""``mafl serve``: an OpenAI-compatible HTTP server (FastAPI + uvicorn) over the transformers backend, so that any
OpenAI client (mafl's ``backend=openai``, lm-evaluation-harness's local chat-completions model, AutoGen) can
talk to a base model and the fine-tuned adapters of a run.

* ``app``: the endpoints (``/v1/models``, ``/v1/chat/completions``, ``/v1/completions`` for prompt
  log-probabilities, vLLM's ``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter``) and the queue that batches
  concurrent requests into one backend call;
* ``weights``: which base model and adapters a run or weights folder holds, and the ``vllm serve`` command that
  serves them on a GPU;
* ``faults``: failures injected on purpose (429, 500, dropped connections), for tests of the clients only;
* ``cli``: the ``mafl serve`` command.
"""
