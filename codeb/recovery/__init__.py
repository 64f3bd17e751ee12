"""codeb survives the loss of its own server: its state replicated off the control server
(Litestream to S3) and a recovery bundle of the keys that must not travel with it."""
