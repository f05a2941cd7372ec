"""Fusion of the text representation with structured customer features."""

import paddle
import paddle.nn as nn

FUSIONS = ("concat", "gate")


class FeatureFusion(nn.Layer):
    """Combine the pooled text vector t with numeric and categorical inputs.

    The structured vector s is the numeric inputs followed by one embedding
    (width `embedding_dim`) per categorical column.

    - "concat": h = Dropout(GELU(W [t; s] + b)), of width `hidden_size`.
    - "gate": g = sigmoid(W_g s + b_g) and h = Dropout(g * t + W_p s + b_p),
      of the text width: the structured inputs decide how much of each text
      dimension passes, and add their own projection.

    `output_size` is the width of h, which the task heads read.
    """

    def __init__(self, text_size, num_numeric=0, vocab_sizes=(),
                 embedding_dim=16, fusion="concat", hidden_size=256,
                 dropout=0.1):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion={fusion!r} is invalid: expected one of "
                             f"{FUSIONS}")
        self.fusion = fusion
        self.num_numeric = num_numeric
        self.embeddings = nn.LayerList(
            [nn.Embedding(size, embedding_dim) for size in vocab_sizes])
        structured_size = num_numeric + embedding_dim * len(vocab_sizes)
        if fusion == "concat":
            self.project = nn.Linear(text_size + structured_size, hidden_size)
            self.activation = nn.GELU()
            self.output_size = hidden_size
        else:
            self.gate = nn.Linear(structured_size, text_size)
            self.project = nn.Linear(structured_size, text_size)
            self.output_size = text_size
        self.dropout = nn.Dropout(dropout)

    def forward(self, text, numeric_features=None, categorical_features=None):
        parts = []
        if self.num_numeric:
            parts.append(numeric_features.astype(text.dtype))
        for j, embedding in enumerate(self.embeddings):
            parts.append(embedding(categorical_features[:, j]))
        structured = parts[0] if len(parts) == 1 else paddle.concat(parts, -1)
        if self.fusion == "concat":
            joined = paddle.concat([text, structured], axis=-1)
            return self.dropout(self.activation(self.project(joined)))
        gate = nn.functional.sigmoid(self.gate(structured))
        return self.dropout(gate * text + self.project(structured))
