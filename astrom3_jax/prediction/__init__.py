"""The parts of `predict_lib.predict`: reading a catalogue into model inputs
(`reading`), running the model over them as they arrive (`running`), scores
from its outputs (`scoring`) and the files written (`writing`)."""
