"""``mafl serve``: an OpenAI-compatible HTTP server (FastAPI + uvicorn) over the transformers backend, so that any
OpenAI client (mafl's ``backend=openai``, lm-evaluation-harness's local chat-completions model, AutoGen) can
talk to a base model and the fine-tuned adapters of a run.

* ``app``: the endpoints (``/v1/models``, ``/v1/chat/completions``, ``/v1/completions`` for text generation or
  prompt log-probabilities, vLLM's ``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter``, ``/metrics``);
* ``limits``: what a request is checked for before any work (the context, ``n``, the body, the messages);
* ``scheduler``: the queue that batches concurrent requests, shares the model fairly (long generations in slices
  that give way to waiting work) and cancels the work of clients that went away;
* ``guard``: the outermost layer: request ids, the API key, the body's bound, one console line per failure;
* ``weights``: which base model and adapters a run or weights folder holds, and the ``vllm serve`` command that
  serves them on a GPU;
* ``faults``: failures injected on purpose (429, 500, dropped connections), for tests of the clients only;
* ``cli``: the ``mafl serve`` command.
"""
