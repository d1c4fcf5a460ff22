"""Ingest across body sizes (bench/ingest.py): a MessagePack body {"x": <bin>}, its length back."""

import openbayes_serving as serv


class Predictor:
    def predict(self, json):
        return {"n": len(json["x"])}


if __name__ == "__main__":
    serv.run(Predictor)
