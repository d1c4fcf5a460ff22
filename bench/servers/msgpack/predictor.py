"""Ingestion benchmark: accept a large MessagePack (or JSON) body, answer a tiny summary."""

import openbayes_serving as serv


class Predictor:
    def predict(self, json):
        return {"n": len(json["data"])}


if __name__ == "__main__":
    serv.run(Predictor)
