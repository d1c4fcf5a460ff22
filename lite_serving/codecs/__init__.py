"""The codecs: JSON (compiled or orjson), MessagePack tensors (compiled or pure Python), numpy's extension type."""
