"""The shared-memory SPSC ring: layout, producer, consumer, wake-up."""
