from .catalog import ModelNotFound, ModelSpec, UnsafeModel, list_models, resolve_model, spec_from_folder
from .loading import load_classifier, load_sentence_encoder, load_tokenizer, token_counter

__all__ = ["ModelNotFound", "ModelSpec", "UnsafeModel", "list_models", "resolve_model",
           "spec_from_folder", "load_classifier", "load_sentence_encoder", "load_tokenizer",
           "token_counter"]
