"""A local stand-in for a fine-tuning API (the remote service, not the thing under test): OpenAI's files and
fine-tuning-jobs endpoints over a recorded state machine, served by uvicorn on 127.0.0.1 in a thread
(``serving.AppThread(service.app())``).

A job is ``queued`` when created, ``running`` at its first status request, and ``succeeded`` at a later one once
``gate`` is set (cleared: jobs stay running, e.g. while a test kills the run). A job whose ``suffix`` holds ``fail``
ends ``failed`` with a recorded reason. A succeeded job's model is registered with ``mafl serve`` (``serve_url``)
under its new id, as a copy of ``model_folder``, so that the next iteration can talk to it.
"""

import json
import threading
import time
import urllib.request

FAIL_REASON = "The job failed due to an invalid training file: line 1 has no assistant message."


class FinetuneService:
    def __init__(self, model_folder: str | None = None, serve_url: str | None = None):
        self.model_folder, self.serve_url = model_folder, serve_url
        self.files: dict[str, bytes] = {}
        self.jobs: dict[str, dict] = {}
        self.gate = threading.Event()
        self.gate.set()

    def register(self, model_id: str) -> None:
        if self.serve_url and self.model_folder:
            body = json.dumps({"lora_name": model_id, "lora_path": self.model_folder}).encode()
            req = urllib.request.Request(f"{self.serve_url}/load_lora_adapter", data=body,
                                         headers={"content-type": "application/json"})
            urllib.request.urlopen(req, timeout=120).read()

    def app(self):
        from fastapi import FastAPI, Request, UploadFile
        from fastapi.responses import JSONResponse

        app = FastAPI()

        @app.post("/v1/files")
        async def upload(file: UploadFile, request: Request):
            form = await request.form()
            data = await file.read()
            fid = f"file-{len(self.files) + 1}"
            self.files[fid] = data
            return {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                    "filename": file.filename, "purpose": form.get("purpose"), "status": "processed"}

        def view(job: dict) -> dict:
            return {k: v for k, v in job.items() if not k.startswith("_")}

        @app.post("/v1/fine_tuning/jobs")
        async def create(request: Request):
            body = await request.json()
            if body.get("training_file") not in self.files:
                return JSONResponse({"error": {"message": "invalid training_file", "type": "invalid_request_error"}},
                                    status_code=400)
            jid = f"ftjob-{len(self.jobs) + 1}"
            self.jobs[jid] = {"id": jid, "object": "fine_tuning.job", "created_at": int(time.time()),
                              "model": body["model"], "training_file": body["training_file"], "status": "queued",
                              "fine_tuned_model": None, "error": None, "hyperparameters": body.get("hyperparameters"),
                              "seed": body.get("seed"), "organization_id": "org-mafl", "result_files": [],
                              "trained_tokens": None, "validation_file": None, "finished_at": None,
                              "_suffix": body.get("suffix") or ""}
            return view(self.jobs[jid])

        @app.get("/v1/fine_tuning/jobs/{jid}")
        async def retrieve(jid: str):
            job = self.jobs.get(jid)
            if job is None:
                return JSONResponse({"error": {"message": f"no job {jid}"}}, status_code=404)
            if job["status"] == "queued":
                job["status"] = "running"
            elif job["status"] == "running" and self.gate.is_set():
                if "fail" in job["_suffix"]:
                    job.update(status="failed", error={"code": "invalid_training_file", "message": FAIL_REASON,
                                                       "param": "training_file"})
                else:
                    model = f"ft:tiny:mafl:{job['_suffix']}:{jid}"
                    self.register(model)
                    job.update(status="succeeded", fine_tuned_model=model, trained_tokens=1000,
                               finished_at=int(time.time()))
            return view(job)

        return app

