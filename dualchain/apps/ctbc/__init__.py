"""CTBC, the main chain: the application its committee orders blocks for.

``registry`` is the application (``RegistryApp``): validator set, committees, model versions and,
on a single chain, the management transactions; ``state`` its state and the verdict of checking a
transaction; ``evidence`` the checks of equivocation and tampered-model evidence; ``payloads`` the
encodings of its transactions; ``reputation`` elects each next committee (seed 001, eq. 2);
``fl`` the model-version rules every committee member re-executes. The BFT engine that drives it
lives in ``dualchain.chain.consensus`` and knows it through ``dualchain.chain.app``.
"""
