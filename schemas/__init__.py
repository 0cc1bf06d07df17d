"""The contracts between celrec's parts: events, API models, Kafka encoding, Redis layout.

Trainer and service depend on these modules, never on each other.
"""
