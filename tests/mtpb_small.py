"""Two small problems in MTPB's JSON shape, three test cases in all (tests read nothing beside the repository; the real
data may be bundled into the package later)."""
from __future__ import annotations

import json
from pathlib import Path

PROBLEMS = [
    {"id": 1, "name": "Sum a list", "description": "Sum a list of numbers.", "category": "math",
     "prompts": ["Assign the list {numbers} to a variable named numbers.",
                 "Compute the sum of numbers and assign it to total.", "Print total."],
     "inputs": [{"numbers": [1, 2, 3]}, {"numbers": [10, 20]}],
     "outputs": [6, 30], "max_gen_length": 24},
    {"id": 2, "name": "Longest word", "description": "The longest word of a sentence.", "category": "string",
     "prompts": ["Assign the string \"{text}\" to a variable named text.", "Split text into words.",
                 "Find the longest word and print it."],
     "inputs": [{"text": "a bb ccc"}],
     "outputs": ["ccc"], "max_gen_length": 24},
]


def write(directory: Path) -> Path:
    path = Path(directory) / "mtpb-small.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    return path
