"""Benchmarks: the collection's scripts side by side with the seed tutorials' code.

    python -m benchmarks --help
"""

# Overrides that make a script fast on the CPU: one short run that reaches the
# seed's accuracy in a fraction of its time. README.md lists them with what
# they measured.
CPU_FAST = {
    "mnist_mlp": ["--epochs=3", "--batch_size=256", "--learning_rate=3e-3"],
    "mnist_cnn": ["--epochs=1", "--filters=8", "--shift=0", "--batch_size=512", "--learning_rate=1e-2"],
    "cifar10_cnn": ["--epochs=1", "--width=12", "--flip=False", "--shift=0", "--learning_rate=8e-3"],
}
