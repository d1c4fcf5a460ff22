"""Echo: answers with the JSON or MessagePack it was sent."""

import openbayes_serving as serv


class Predictor:
    def __init__(self):
        pass

    def predict(self, json):
        return json


if __name__ == "__main__":
    serv.run(Predictor)
