"""CTBC, the main chain: the application its committee orders blocks for.

``registry`` keeps the validator set, the committee of each epoch, per-validator statistics and
recorded misbehaviour; ``payloads`` holds the encodings of its transactions; ``reputation`` elects
each next committee from those statistics (seed 001, eq. 2). The BFT engine that drives them lives
in ``dualchain.chain.consensus``.
"""
