from services.kit import run_env
from tests.integration.kit.notes.capability import NotesBase

run_env(NotesBase.metadata)
