"""The predictor: loading predictor.py, its signature map, the values it asks for, the request view and Flask facade, body decoding, answer encoding, streams."""
