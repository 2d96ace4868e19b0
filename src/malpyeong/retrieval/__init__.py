"""Retrieval: a corpus in passages (:mod:`.corpus`), sparse (BM25 over Mecab morphemes,
:mod:`.sparse`), dense (sentence-transformers, :mod:`.dense`) and hybrid (reciprocal rank
fusion) indexes saved as folders (:mod:`.index`), their evaluation (:mod:`.evaluation`), and the
chunk ranking of one long document (:mod:`.chunks`, the qa task's length budget).

Nothing here knows a task: a task says what its query is and where passages go in its prompt.
"""
