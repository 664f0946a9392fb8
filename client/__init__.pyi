from hookdb.client.emitter import Emitter as Emitter

__all__ = ["Emitter"]
