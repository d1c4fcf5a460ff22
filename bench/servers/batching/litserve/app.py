"""Batching benchmark on LitServe: the same model and per-request work as the other servers.

    python app.py --host H --port P --max-batch-size N [--batch-timeout S]

With ``--max-batch-size 1`` every request is its own model call; above 1, LitServe
gathers up to N requests (waiting up to ``--batch-timeout`` seconds, LitServe's
default 0 taking whatever is queued) and ``batch``/``unbatch`` below join and split
their rows around one model call.
"""

import argparse
import os
import sys

import litserve as ls

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from onnx_rows import RowModel  # noqa: E402


class RowsAPI(ls.LitAPI):
    def setup(self, device):
        self.model = RowModel()

    def decode_request(self, request):
        return self.model.feeds(request)

    def batch(self, inputs):
        return self.model.concatenate(inputs)

    def predict(self, x):
        if self.max_batch_size > 1:
            joined, counts = x
            return self.model.run(joined), counts
        return self.model.run(x)

    def unbatch(self, output):
        outputs, counts = output
        return self.model.split(outputs, counts)

    def encode_response(self, output):
        return output if self.max_batch_size > 1 else self.model.answer(output)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch-size", type=int, default=1)
    p.add_argument("--batch-timeout", type=float, default=None, help="seconds (default: LitServe's)")
    args = p.parse_args()
    batching = {"max_batch_size": args.max_batch_size}
    if args.batch_timeout is not None:
        batching["batch_timeout"] = args.batch_timeout
    server = ls.LitServer(RowsAPI(**batching), accelerator="cpu", workers_per_device=1)
    server.run(host=args.host, port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
