"""Echo through Flask's request API: the cost of asking for ``request`` instead of ``json``."""

import openbayes_serving as serv


class Predictor:
    def predict(self, request):
        return request.get_json()


if __name__ == "__main__":
    serv.run(Predictor)
