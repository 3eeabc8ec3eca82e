"""Writes semantic_pairs.json: labelled prompt pairs for the semantic tier.

`same: true` pairs ask the same thing (a served answer is right); `same:
false` pairs are near misses that must never share an answer. Hand-written
pairs first, then templated ones that vary one thing that matters (a
number, an entity, a unit, the order, a contrasting word). Run it to
regenerate the JSON after editing; the tests and `make bench` read the JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

SAME = [
    ("What is the capital of France?", "what is the capital of france"),
    ("What is the capital of France?", "What's the capital of France?"),
    ("What is the capital of France?", "Tell me the capital of France."),
    ("What is the capital of France?", "capital of France?"),
    ("How do I reverse a list in Python?", "How can I reverse a list in Python?"),
    ("How do I reverse a list in Python?", "how do i reverse a list in python"),
    ("How do I reverse a list in Python?", "How to reverse a list in Python?"),
    ("Explain how photosynthesis works", "Explain how photosynthesis works."),
    ("Explain how photosynthesis works", "Can you explain how photosynthesis works?"),
    ("Explain how photosynthesis works", "Please explain how photosynthesis works"),
    ("Summarize the plot of Hamlet", "Summarise the plot of Hamlet"),
    ("Summarize the plot of Hamlet", "Give me a summary of the plot of Hamlet"),
    ("What is the boiling point of water?", "What's the boiling point of water?"),
    ("What is the boiling point of water?", "what is the boiling point of water"),
    ("Who wrote Pride and Prejudice?", "Who wrote Pride and Prejudice"),
    ("Who wrote Pride and Prejudice?", "who wrote pride and prejudice?"),
    ("Who wrote Pride and Prejudice?", "Who is the author who wrote Pride and Prejudice?"),
    ("How many legs does a spider have?", "How many legs do spiders have?"),
    ("How many legs does a spider have?", "how many legs does a spider have"),
    ("What is the speed of light?", "What is the speed of light in a vacuum?"),
    ("Give me a recipe for pancakes", "Give me a pancake recipe"),
    ("Give me a recipe for pancakes", "give me a recipe for pancakes please"),
    ("Write a haiku about autumn leaves", "Write a haiku about the autumn leaves"),
    ("Write a haiku about autumn leaves", "write a haiku about autumn leaves"),
    ("What does HTTP stand for?", "What does HTTP stand for"),
    ("What does HTTP stand for?", "what does HTTP stand for?"),
    ("Translate good morning into Spanish", "Translate good morning to Spanish"),
    ("What is a closure in JavaScript?", "What's a closure in JavaScript?"),
    ("What is a closure in JavaScript?", "Explain what a closure is in JavaScript"),
    ("Why is the sky blue?", "Why is the sky blue"),
    ("Why is the sky blue?", "why's the sky blue?"),
    ("Why is the sky blue?", "Can you tell me why the sky is blue?"),
    ("List the planets of the solar system", "List the planets in the solar system"),
    ("List the planets of the solar system", "list all the planets of the solar system"),
    ("What is the difference between TCP and UDP?", "What's the difference between TCP and UDP?"),
    ("What is the difference between TCP and UDP?", "what is the difference between TCP and UDP"),
    ("How do I make a git branch?", "How do I create a git branch?"),
    ("How do I make a git branch?", "how do i make a git branch"),
    ("What are the symptoms of the flu?", "What are common symptoms of the flu?"),
    ("What are the symptoms of the flu?", "what are the symptoms of flu"),
    ("Define entropy", "Define entropy."),
    ("Define entropy", "define entropy please"),
    ("How does a binary search work?", "How does binary search work?"),
    ("How does a binary search work?", "Explain how a binary search works"),
    ("What is the population of Canada?", "What's the population of Canada?"),
    ("What is the population of Canada?", "what is the population of canada"),
    ("Recommend a good book about history", "Recommend a good history book"),
    ("Recommend a good book about history", "recommend a good book about history"),
    ("How do I center a div in CSS?", "How can I center a div in CSS?"),
    ("How do I center a div in CSS?", "how to center a div in CSS"),
    ("What is machine learning?", "What is machine learning"),
    ("What is machine learning?", "Explain what machine learning is"),
    ("What is machine learning?", "Can you tell me what machine learning is?"),
    ("Tell me a joke about cats", "Tell me a joke about a cat"),
    ("Tell me a joke about cats", "tell me a cat joke"),
    ("What time zone is Tokyo in?", "Which time zone is Tokyo in?"),
    ("What time zone is Tokyo in?", "what time zone is tokyo in"),
    ("How do vaccines work?", "How do vaccines work"),
    ("How do vaccines work?", "Explain how vaccines work"),
    ("What is the tallest mountain in the world?", "What's the tallest mountain in the world?"),
    ("What is the tallest mountain in the world?", "Which is the tallest mountain in the world?"),
    ("What is the tallest mountain in the world?", "what is the worlds tallest mountain"),
    ("Is coffee bad for your health?", "Is coffee bad for health?"),
    ("Is coffee bad for your health?", "is coffee bad for your health"),
    ("How do I sort a dictionary by value in Python?", "How can I sort a dictionary by value in Python?"),
    ("How do I sort a dictionary by value in Python?", "Sort a dictionary by value in Python"),
    ("What causes earthquakes?", "What causes an earthquake?"),
    ("What causes earthquakes?", "what causes earthquakes"),
    ("What causes earthquakes?", "Explain what causes earthquakes"),
    ("Describe the water cycle", "Describe the water cycle."),
    ("Describe the water cycle", "Can you describe the water cycle?"),
    ("What is the meaning of life?", "What's the meaning of life?"),
    ("What is the meaning of life?", "what is the meaning of life"),
    ("Explain quantum entanglement simply", "Explain quantum entanglement in simple terms"),
    ("Explain quantum entanglement simply", "explain quantum entanglement simply please"),
    ("How do I install Docker on Ubuntu?", "How can I install Docker on Ubuntu?"),
    ("How do I install Docker on Ubuntu?", "How to install Docker on Ubuntu"),
    ("How do I install Docker on Ubuntu?", "install Docker on Ubuntu"),
    ("What is the GDP of Germany?", "What's the GDP of Germany?"),
    ("What is the GDP of Germany?", "what is germany's GDP"),
    ("Who painted the Mona Lisa?", "Who painted the Mona Lisa"),
    ("Who painted the Mona Lisa?", "who painted the mona lisa?"),
    ("Who painted the Mona Lisa?", "Which artist painted the Mona Lisa?"),
    ("How many bones are in the human body?", "How many bones are there in the human body?"),
    ("How many bones are in the human body?", "how many bones in the human body"),
    ("What is recursion?", "What is recursion in programming?"),
    ("What is recursion?", "Explain recursion"),
    ("Suggest names for a pet turtle", "Suggest some names for a pet turtle"),
    ("Suggest names for a pet turtle", "suggest names for my pet turtle"),
    ("What is the chemical formula of water?", "What's the chemical formula for water?"),
    ("What is the chemical formula of water?", "chemical formula of water"),
    ("How do I improve my sleep?", "How can I improve my sleep?"),
    ("How do I improve my sleep?", "how do i improve my sleep quality"),
    ("Explain the theory of relativity", "Explain the theory of relativity."),
    ("Explain the theory of relativity", "Can you explain the theory of relativity?"),
    ("What is an API?", "What is an API"),
    ("What is an API?", "Explain what an API is"),
    ("What is the largest ocean?", "What is the largest ocean on Earth?"),
    ("What is the largest ocean?", "which is the largest ocean"),
    ("How does a refrigerator work?", "How does a fridge work?"),
    ("How does a refrigerator work?", "how does a refrigerator work"),
    ("Write a short poem about the sea", "Write a short poem about the ocean"),
    ("Write a short poem about the sea", "write a short poem about the sea"),
    ("What is inflation in economics?", "What is inflation in economics"),
    ("What is inflation in economics?", "Explain inflation in economics"),
    ("How to boil an egg", "How do I boil an egg?"),
    ("How to boil an egg", "how to boil an egg?"),
    ("How to boil an egg", "How should I boil an egg?"),
    ("What is the square root of 144?", "What's the square root of 144?"),
    ("What is the square root of 144?", "square root of 144"),
    ("What is 15% of 200?", "what is 15% of 200"),
    ("What is 15% of 200?", "What's 15% of 200?"),
    ("Convert 5 miles to kilometers", "Convert 5 miles into kilometers"),
    ("Convert 5 miles to kilometers", "convert 5 miles to kilometers please"),
    ("What does the len() function do in Python?", "What does len() do in Python?"),
    ("What does the len() function do in Python?", "Explain what the len() function does in Python"),
    ("Is it safe to eat raw eggs?", "Is eating raw eggs safe?"),
    ("Is it safe to eat raw eggs?", "is it safe to eat raw eggs"),
    ("What year did World War II end?", "In what year did World War II end?"),
    ("What year did World War II end?", "what year did world war II end"),
    ("Why do cats purr?", "Why do cats purr"),
    ("Why do cats purr?", "Why does a cat purr?"),
    ("How do I undo the last git commit?", "How can I undo the last git commit?"),
    ("How do I undo the last git commit?", "undo the last git commit"),
    ("What is the best way to learn piano?", "What's the best way to learn the piano?"),
    ("What is the best way to learn piano?", "best way to learn piano?"),
    ("Describe the architecture of a CPU", "Describe the architecture of a CPU."),
    ("Describe the architecture of a CPU", "describe CPU architecture"),
    ("How long should I steep green tea?", "How long do I steep green tea?"),
    ("How long should I steep green tea?", "how long should green tea steep"),
    ("What is a black hole?", "What is a black hole"),
    ("What is a black hole?", "Explain what a black hole is"),
    ("Give me tips for a job interview", "Give me some tips for a job interview"),
    ("Give me tips for a job interview", "tips for a job interview?"),
    ("What are prime numbers?", "What are prime numbers"),
    ("What are prime numbers?", "Explain prime numbers"),
    ("How does compound interest work?", "How does compound interest work"),
    ("How does compound interest work?", "Explain how compound interest works"),
    ("What is the function of the liver?", "What does the liver do?"),
    ("What is the function of the liver?", "what is the function of the liver"),
    ("Open the file 'notes.txt' in Python", "How do I open the file 'notes.txt' in Python?"),
    ("What is https://example.com used for?", "what is https://example.com used for"),
    ("Fix the error in my_function", "Fix the error in my_function please"),
    ("Fix the error in my_function", "fix the error in my_function"),
]

DIFFERENT = [
    ("What is 2+2?", "What is 2+3?"),
    ("What is 2+2?", "What is 2*2?"),
    ("What is 12 times 7?", "What is 12 times 8?"),
    ("What is the square root of 144?", "What is the square root of 169?"),
    ("Convert 100 F to C", "Convert 100 C to F"),
    ("Convert 100 F to C", "Convert 200 F to C"),
    ("Convert 5 miles to kilometers", "Convert 5 kilometers to miles"),
    ("Convert 5 miles to kilometers", "Convert 5 miles to meters"),
    ("Convert 10 USD to EUR", "Convert 10 EUR to USD"),
    ("Convert 10 USD to EUR", "Convert 10 USD to GBP"),
    ("How many grams in 3 pounds?", "How many grams in 3 ounces?"),
    ("What is the capital of France?", "What is the capital of Germany?"),
    ("What is the capital of France?", "What is the capital of Spain?"),
    ("What is the population of Canada?", "What is the population of Mexico?"),
    ("Who painted the Mona Lisa?", "Who painted The Starry Night?"),
    ("Who wrote Pride and Prejudice?", "Who wrote War and Peace?"),
    ("Is Paris bigger than London?", "Is London bigger than Paris?"),
    ("Is Python faster than Java?", "Is Java faster than Python?"),
    ("Translate hello from English to French", "Translate hello from French to English"),
    ("Translate good morning into Spanish", "Translate good morning into Italian"),
    ("How do I reverse a list in Python?", "How do I reverse a list in Java?"),
    ("How do I reverse a list in Python?", "How do I reverse a list in Rust?"),
    ("How do I sort a dictionary by value in Python?", "How do I sort a dictionary by key in Python?"),
    ("Should I buy Tesla stock?", "Should I sell Tesla stock?"),
    ("What are the pros of remote work?", "What are the cons of remote work?"),
    ("What are the advantages of nuclear power?", "What are the disadvantages of nuclear power?"),
    ("Write a cover letter for a junior developer role", "Write a cover letter for a senior developer role"),
    ("Is the Moon closer than the Sun?", "Is the Moon farther than the Sun?"),
    ("What happened before the French Revolution?", "What happened after the French Revolution?"),
    ("Find the max of a list in Python", "Find the min of a list in Python"),
    ("How do I increase my credit score?", "How do I decrease my credit score?"),
    ("How to encrypt a file with GPG", "How to decrypt a file with GPG"),
    ("How do I upload a file to S3?", "How do I download a file from S3?"),
    ("Sort the numbers in ascending order", "Sort the numbers in descending order"),
    ("Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?"),
    ("Why is coffee good for you?", "Why is coffee not good for you?"),
    ("Write a story with a happy ending", "Write a story without a happy ending"),
    ("List foods that contain gluten", "List foods that don't contain gluten"),
    ("Can dogs eat grapes?", "Can't dogs eat grapes?"),
    ("What does the len() function do in Python?", "What does the sum() function do in Python?"),
    ("Fix the error in my_function", "Fix the error in other_function"),
    ("Explain what os.path.join does", "Explain what os.path.split does"),
    ("What is the difference between useState and useEffect?", "What is the difference between useState and useReducer?"),
    ("What does the file 'config.yaml' contain?", "What does the file 'settings.yaml' contain?"),
    ("Summarize https://example.com/a", "Summarize https://example.com/b"),
    ("Email alice@example.com about the meeting", "Email bob@example.com about the meeting"),
    ("What is the boiling point of water?", "What is the boiling point of mercury?"),
    ("What year did World War II end?", "What year did World War I end?"),
    ("What is 15% of 200?", "What is 20% of 200?"),
    ("What is 15% of 200?", "What is 15% of 300?"),
    ("Set a timer for 5 minutes", "Set a timer for 15 minutes"),
    ("Set a timer for 5 minutes", "Set a timer for 5 hours"),
    ("Book a table for 2 at 7pm", "Book a table for 4 at 7pm"),
    ("How far is it from Boston to New York?", "How far is it from Boston to Chicago?"),
    ("Flights from Berlin to Rome", "Flights from Rome to Berlin"),
    ("Is the stock market up today?", "Is the stock market down today?"),
    ("What is the hottest planet?", "What is the coldest planet?"),
    ("Name the largest country in Africa", "Name the smallest country in Africa"),
    ("What is the longest river in Europe?", "What is the shortest river in Europe?"),
    ("Give me a recipe for pancakes", "Give me a recipe for waffles"),
    ("Tell me a joke about cats", "Tell me a joke about dogs"),
    ("Write a haiku about autumn leaves", "Write a haiku about spring leaves"),
    ("How do I make a git branch?", "How do I delete a git branch?"),
    ("How do I install Docker on Ubuntu?", "How do I install Docker on Fedora?"),
    ("How do I install Docker on Ubuntu?", "How do I uninstall Docker on Ubuntu?"),
    ("Explain the first law of thermodynamics", "Explain the second law of thermodynamics"),
    ("What is the chemical formula of water?", "What is the chemical formula of salt?"),
    ("What time zone is Tokyo in?", "What time zone is Sydney in?"),
    ("Who won the 2018 World Cup?", "Who won the 2022 World Cup?"),
    ("What is the GDP of Germany?", "What is the GDP of Japan?"),
    ("How many legs does a spider have?", "How many legs does an ant have?"),
    ("What does HTTP stand for?", "What does FTP stand for?"),
    ("What is the difference between TCP and UDP?", "What is the difference between TCP and IP?"),
    ("Should I use tabs or spaces?", "Should I use spaces or tabs?"),
    ("Is it better to rent or buy a house?", "Is it better to buy or rent a house?"),
    ("Compare cats to dogs", "Compare dogs to cats"),
    ("How do I open a port on the firewall?", "How do I close a port on the firewall?"),
    ("How to enable SSH on Linux", "How to disable SSH on Linux"),
    ("Write a function that returns true if n is even", "Write a function that returns false if n is even"),
    ("Import data from a CSV file", "Export data to a CSV file"),
    ("Give me a beginner workout plan", "Give me an advanced workout plan"),
    ("What is the fastest sorting algorithm?", "What is the slowest sorting algorithm?"),
    ("What's the best programming language?", "What's the worst programming language?"),
    ("Is 17 a prime number?", "Is 21 a prime number?"),
    ("What is 2 to the power of 10?", "What is 10 to the power of 2?"),
    ("Divide 10 by 2", "Divide 2 by 10"),
    ("Subtract 3 from 10", "Subtract 10 from 3"),
    ("Is 0.1 + 0.2 equal to 0.3?", "Is 0.1 + 0.2 equal to 0.4?"),
    ("Explain `git rebase`", "Explain `git merge`"),
    ("Run \"npm install\" in the project", "Run \"npm uninstall\" in the project"),
]

NUMBER_TEMPLATES = [
    "What is {a} plus {b}?", "How much is {a} times {b}?", "What is {a} divided by {b}?",
    "Round {a}.{b} to the nearest integer", "What is {a} squared?", "Is {a} greater than {b}?",
    "How many days are in {a} weeks?", "Convert {a} Celsius to Fahrenheit", "What was the population in {a}{b}?",
    "Give me {a} ideas for a birthday party", "List {a} facts about the Moon", "Write a {a}-line poem about rain",
]
NUMBER_PAIRS = [(2, 3), (7, 8), (12, 21), (10, 100), (5, 6), (19, 91), (3, 30), (4, 40)]

ENTITY_TEMPLATES = [
    "What is the capital of {x}?", "What language is spoken in {x}?", "What currency does {x} use?",
    "What is the weather like in {x} in winter?", "Give me a travel itinerary for {x}",
    "What is the national dish of {x}?", "Tell me about the history of {x}",
]
ENTITY_PAIRS = [("Italy", "Spain"), ("Brazil", "Argentina"), ("Japan", "China"), ("Kenya", "Nigeria"),
                ("Norway", "Sweden"), ("Peru", "Chile")]

SWAP_TEMPLATES = [
    ("Is {x} older than {y}?", "Is {y} older than {x}?"),
    ("Write an email from {x} to {y}", "Write an email from {y} to {x}"),
    ("Translate this from {x} to {y}", "Translate this from {y} to {x}"),
    ("How do I migrate from {x} to {y}?", "How do I migrate from {y} to {x}?"),
]
SWAP_PAIRS = [("MySQL", "Postgres"), ("English", "German"), ("Alice", "Bob"), ("Vue", "React"),
              ("Python", "Go"), ("Windows", "Linux")]

SAME_TEMPLATES = [
    ("What is the capital of {x}?", "what is the capital of {x}"),
    ("What language is spoken in {x}?", "What language is spoken in {x}"),
    ("Tell me about the history of {x}", "Tell me about the history of {x}."),
    ("Give me a travel itinerary for {x}", "give me a travel itinerary for {x} please"),
]


def pairs() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for a, b in SAME:
        out.append({"a": a, "b": b, "same": True, "kind": "paraphrase"})
    for a, b in DIFFERENT:
        out.append({"a": a, "b": b, "same": False, "kind": "near-miss"})
    for t in NUMBER_TEMPLATES:
        for a, b in NUMBER_PAIRS[:3]:
            out.append({"a": t.format(a=a, b=b), "b": t.format(a=b, b=a) if "{b}" in t else t.format(a=b, b=a),
                        "same": False, "kind": "numbers"})
    for t in ENTITY_TEMPLATES:
        for x, y in ENTITY_PAIRS[:4]:
            out.append({"a": t.format(x=x), "b": t.format(x=y), "same": False, "kind": "entities"})
    for ta, tb in SWAP_TEMPLATES:
        for x, y in SWAP_PAIRS:
            out.append({"a": ta.format(x=x, y=y), "b": tb.format(x=x, y=y), "same": False, "kind": "swapped"})
    for ta, tb in SAME_TEMPLATES:
        for x, _ in ENTITY_PAIRS:
            out.append({"a": ta.format(x=x), "b": tb.format(x=x), "same": True, "kind": "paraphrase"})
    seen = set()
    unique = []
    for p in out:
        k = (p["a"], p["b"])
        if k not in seen and p["a"] != p["b"]:
            seen.add(k)
            unique.append(p)
    return unique


if __name__ == "__main__":
    data = pairs()
    Path(__file__).with_name("semantic_pairs.json").write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    print(len(data), "pairs:", sum(1 for p in data if p["same"]), "same,", sum(1 for p in data if not p["same"]), "different")
