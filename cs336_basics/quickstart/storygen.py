"""A deterministic synthetic children's-story corpus, so the quickstart runs fully offline.

Why: the quickstart must work from a fresh clone with no downloads. TinyStories is the real target,
but a few megabytes of simple, grammatical, repetitive-yet-varied stories are enough for a tiny model
to visibly learn (loss drops, samples read like stories) in a couple of minutes on a CPU.

Each story has a beginning (who, where, what they love), a problem, a middle with dialogue, a
resolution and often a moral -- the shape of a TinyStories story -- built from templates whose slots
are filled from word lists (names, animals, places, objects, feelings...). Everything is driven by one
``random.Random(seed)``, so the same seed gives byte-identical text on every platform.

    >>> text = generate_corpus(2, seed=0)
    >>> text.count("<|endoftext|>")
    2
    >>> generate_corpus(2, seed=0) == text
    True

From the command line (e.g. for the conversation demo in the docs, which needs no download)::

    python -m cs336_basics.quickstart.storygen --stories 4000 --output runs/stories-train.txt
"""

from __future__ import annotations

import argparse
import os
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from cs336_basics.interop.gpt2_files import EOT
from cs336_basics.utils.errors import run_cli
from cs336_basics.utils.fsutil import atomic_write

# ---------------------------------------------------------------------------------------------------
# Word lists
# ---------------------------------------------------------------------------------------------------
GIRL_NAMES = [
    "Lily",
    "Mia",
    "Sue",
    "Anna",
    "Lucy",
    "Emma",
    "Sara",
    "Amy",
    "Zoe",
    "Ella",
    "Rose",
    "Kim",
    "Jane",
    "Molly",
    "Daisy",
    "Ruby",
    "Grace",
    "Ivy",
    "Nora",
    "Pia",
    "Tara",
    "Wendy",
    "Lola",
    "Maya",
]
BOY_NAMES = [
    "Tom",
    "Ben",
    "Max",
    "Tim",
    "Sam",
    "Jack",
    "Leo",
    "Finn",
    "Jake",
    "Bob",
    "Joe",
    "Ned",
    "Alex",
    "Ollie",
    "Danny",
    "Eli",
    "Luke",
    "Owen",
    "Pete",
    "Ray",
    "Toby",
    "Zack",
    "Milo",
    "Noah",
]
ANIMALS = [
    "cat",
    "dog",
    "bunny",
    "bear",
    "duck",
    "frog",
    "mouse",
    "fox",
    "owl",
    "pig",
    "lamb",
    "bird",
    "puppy",
    "kitten",
    "turtle",
    "squirrel",
    "elephant",
    "lion",
    "monkey",
    "horse",
    "cow",
    "goat",
    "hedgehog",
    "penguin",
    "fish",
    "deer",
    "chick",
    "tiger",
]
ANIMAL_NAMES = [
    "Spot",
    "Fluffy",
    "Pip",
    "Buddy",
    "Coco",
    "Sunny",
    "Whiskers",
    "Bubbles",
    "Patch",
    "Rusty",
    "Tiny",
    "Goldie",
    "Hoppy",
    "Snowy",
    "Peanut",
    "Button",
    "Ziggy",
    "Muffin",
    "Dot",
    "Biscuit",
]
SIZE_ADJ = ["little", "small", "tiny", "big", "young"]
KIND_ADJ = [
    "happy",
    "kind",
    "friendly",
    "curious",
    "brave",
    "shy",
    "playful",
    "gentle",
    "silly",
    "clever",
    "cheerful",
    "busy",
    "sleepy",
    "funny",
    "helpful",
]
COLORS = ["red", "blue", "green", "yellow", "pink", "purple", "orange", "brown", "white", "shiny"]
PLACES = [
    ("park", "in the park"),
    ("garden", "in the garden"),
    ("forest", "in the forest"),
    ("beach", "at the beach"),
    ("farm", "on the farm"),
    ("meadow", "in the meadow"),
    ("pond", "by the pond"),
    ("yard", "in the yard"),
    ("hill", "on the hill"),
    ("playground", "at the playground"),
    ("river", "by the river"),
    ("town", "in the small town"),
    ("woods", "in the woods"),
    ("field", "in the big field"),
]
ACTIVITIES = [
    "play with a ball",
    "run and jump",
    "look at the flowers",
    "sing songs",
    "draw pictures",
    "build with blocks",
    "splash in puddles",
    "chase butterflies",
    "read books",
    "dance in the sun",
    "climb trees",
    "fly a kite",
    "dig in the sand",
    "pick berries",
    "play hide and seek",
    "ride a bike",
    "look at the clouds",
    "collect leaves",
    "bake cookies with mom",
    "count the stars",
]
TOYS = [
    "ball",
    "teddy bear",
    "kite",
    "toy car",
    "doll",
    "red truck",
    "yo-yo",
    "toy boat",
    "puzzle",
    "drum",
    "hat",
    "blanket",
    "book",
    "crayon",
    "jump rope",
    "toy train",
    "little robot",
    "bucket",
]
FOODS = [
    "apple",
    "cookie",
    "cake",
    "sandwich",
    "banana",
    "pie",
    "carrot",
    "muffin",
    "candy",
    "pear",
    "slice of bread",
    "bowl of berries",
    "cupcake",
    "orange",
]
HIDING_SPOTS = [
    "under the bed",
    "behind the tree",
    "in the tall grass",
    "under a big leaf",
    "inside an old box",
    "behind the couch",
    "near the fence",
    "under the table",
    "in the bushes",
    "next to the rock",
]
FEARS = [
    ("the dark", "dark"),
    ("the loud thunder", "thunder"),
    ("the big dog next door", "dog"),
    ("the deep water", "water"),
    ("the tall slide", "slide"),
    ("the strange noise at night", "noise"),
]
HELPERS = ["mom", "dad", "grandma", "grandpa", "big sister", "big brother", "teacher"]
WEATHER = [
    "The sun was bright and warm.",
    "The sky was blue and clear.",
    "It was a windy day.",
    "It was a cool and quiet morning.",
    "Soft white clouds moved across the sky.",
    "The birds were singing in the trees.",
    "It had rained, and the grass was wet.",
]
BUILDS = [
    ("sandcastle", "the waves came and washed it away"),
    ("snowman", "the sun came out and it began to melt"),
    ("tower of blocks", "the dog ran by and knocked it down"),
    ("fort of pillows", "it fell down with a big thump"),
    ("kite", "the string broke in the wind"),
    ("little boat", "it tipped over in the water"),
]
FINDS = [
    "a shiny rock",
    "a tiny key",
    "an old map",
    "a sparkly shell",
    "a little box",
    "a golden feather",
    "a round stone",
    "a small bell",
]
PLANTS = [
    ("seed", "a big sunflower"),
    ("seed", "a tall tree"),
    ("bulb", "a pretty tulip"),
    ("seed", "a red tomato plant"),
    ("seed", "a bush full of berries"),
]

HAPPY = ["happy", "glad", "excited", "proud", "thankful", "joyful"]
SAD = ["sad", "upset", "worried", "lonely", "scared", "grumpy"]


class Character:
    """A story character with the pronouns and phrases the templates need."""

    def __init__(self, name: str, kind: str, girl: bool, described: str):
        self.name = name
        self.kind = kind  # "girl", "boy", "cat", ...
        self.girl = girl
        self.described = described  # e.g. "a little girl named Lily"

    @property
    def he(self) -> str:
        return "she" if self.girl else "he"

    @property
    def him(self) -> str:
        return "her" if self.girl else "him"

    @property
    def his(self) -> str:
        return "her" if self.girl else "his"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _a(word: str) -> str:
    """Indefinite article: 'an apple', 'a cat'."""
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


class _Story:
    """Helper that picks words with one RNG and collects sentences into paragraphs."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.paragraphs: list[list[str]] = [[]]
        self.used_names: set[str] = set()

    def pick(self, items):
        return self.rng.choice(items)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def say(self, *options: str) -> None:
        self.paragraphs[-1].append(self.pick(options))

    def new_paragraph(self) -> None:
        if self.paragraphs[-1]:
            self.paragraphs.append([])

    def text(self) -> str:
        return "\n".join(" ".join(p) for p in self.paragraphs if p)

    def character(self, allow_animal: bool = True) -> Character:
        rng = self.rng
        if allow_animal and rng.random() < 0.4:
            kind = self.pick(ANIMALS)
            name = self._fresh(ANIMAL_NAMES)
            girl = rng.random() < 0.5
        else:
            girl = rng.random() < 0.5
            kind = "girl" if girl else "boy"
            name = self._fresh(GIRL_NAMES if girl else BOY_NAMES)
        adj = self.pick(SIZE_ADJ + KIND_ADJ)
        return Character(name, kind, girl, f"{_a(adj)} {kind} named {name}")

    def _fresh(self, names: list[str]) -> str:
        for _ in range(20):
            n = self.pick(names)
            if n not in self.used_names:
                self.used_names.add(n)
                return n
        return self.pick(names)


# ---------------------------------------------------------------------------------------------------
# Story parts
# ---------------------------------------------------------------------------------------------------
def _opening(s: _Story, hero: Character, place: tuple[str, str]) -> None:
    where = place[1]
    s.say(
        f"Once upon a time, there was {hero.described}.",
        f"Once upon a time, {where}, there lived {hero.described}.",
        f"One day, {hero.described} went to play {where}.",
        f"There once was {hero.described} who lived near the {place[0]}.",
        f"Once upon a time, {where}, there was {hero.described}.",
    )
    activity = s.pick(ACTIVITIES)
    s.say(
        f"{hero.name} loved to {activity}.",
        f"{_cap(hero.he)} liked to {activity} every day.",
        f"Every morning, {hero.name} would {activity} {where}.",
        f"{hero.name} was very {s.pick(KIND_ADJ)} and loved to {activity}.",
    )
    if s.chance(0.5):
        s.say(*WEATHER)


def _moral(s: _Story, hero: Character, lesson: str, because: str) -> None:
    s.say(
        f"From that day on, {hero.name} knew that {lesson}.",
        f"{hero.name} learned that {lesson}.",
        f"And so, {hero.name} learned an important lesson: {lesson}.",
        f"The moral of the story is that {lesson}.",
        f"{hero.name} smiled, because {hero.he} knew that {lesson}.",
    )
    if s.chance(0.5):
        s.say(
            f"{_cap(because)}.",
            "And they all lived happily ever after.",
            "It was the best day ever.",
            f"{hero.name} went home feeling very {s.pick(HAPPY)}.",
        )


def _plot_lost(s: _Story, hero: Character, friend: Character, place) -> None:
    toy = s.pick(TOYS)
    spot = s.pick(HIDING_SPOTS)
    color = s.pick(COLORS)
    s.say(
        f"{hero.name} had {_a(color)} {toy} that {hero.he} loved very much.",
        f"{_cap(hero.his)} favorite thing was {_a(color)} {toy}.",
    )
    s.new_paragraph()
    s.say(
        f"One day, {hero.name} could not find {hero.his} {toy}.",
        f"But one day, the {toy} was gone!",
        f"One morning, {hero.name} looked everywhere, but the {toy} was not there.",
    )
    s.say(f"{hero.name} felt very {s.pick(SAD)}.", f"{_cap(hero.he)} started to cry.")
    s.say(f'"Where is my {toy}?" {hero.name} asked.', f'"Oh no! I lost my {toy}!" cried {hero.name}.')
    s.say(
        f"{friend.name}, {_a(friend.kind)} who lived nearby, came to help.",
        f'{hero.his.capitalize()} friend {friend.name} saw {hero.him} and said, "Don\'t be sad. I will help you look."',
    )
    s.say(f"They looked {place[1]}. They looked {s.pick(HIDING_SPOTS)}.", "Together they searched high and low.")
    s.new_paragraph()
    s.say(
        f"At last, {friend.name} found the {toy} {spot}!",
        f"Then {hero.name} saw something {color} {spot}. It was the {toy}!",
    )
    s.say(
        f'"Thank you, {friend.name}!" said {hero.name}. "You are a good friend."',
        f'"You found it!" {hero.name} shouted with joy.',
    )
    s.say(f"{hero.name} gave {friend.name} a big hug.", "They played together until the sun went down.")
    _moral(
        s,
        hero,
        s.pick(
            [
                "friends help each other",
                "it is good to take care of your things",
                "a good friend is always there for you",
            ]
        ),
        "having a friend made everything better",
    )


def _plot_share(s: _Story, hero: Character, friend: Character, place) -> None:
    food = s.pick(FOODS + TOYS)
    s.say(f"One day, {hero.name} had {_a(food)}.", f"{hero.name}'s {s.pick(HELPERS)} gave {hero.him} {_a(food)}.")
    s.say(
        f"Then {friend.name} came by. {_cap(friend.he)} did not have anything.",
        f"{_cap(friend.described)} walked up and looked at the {food}.",
    )
    s.say(f'"Can I have some?" asked {friend.name}.', f'"That looks so nice," said {friend.name}. "Can we share?"')
    s.new_paragraph()
    s.say(
        f'At first, {hero.name} did not want to share. "It is mine," {hero.he} said.',
        f"{hero.name} held the {food} close. {_cap(hero.he)} wanted it all for {hero.him}self.",
    )
    s.say(f"{friend.name} looked {s.pick(SAD)}.", f"{friend.name} walked away, feeling {s.pick(SAD)}.")
    s.say(
        f"{hero.name} thought about it. {_cap(hero.he)} did not like to see {hero.his} friend {s.pick(SAD)}.",
        f"Then {hero.name} felt bad inside.",
    )
    s.new_paragraph()
    s.say(f'"Here, you can have half," said {hero.name}.', f'"Wait! Let\'s share," said {hero.name}.')
    s.say(f"{friend.name} smiled a big smile.", f'"Thank you!" said {friend.name}.')
    s.say(f"They shared the {food} {place[1]} and laughed together.", "Sharing made them both feel warm and happy.")
    _moral(
        s,
        hero,
        s.pick(["sharing is caring", "it feels good to share with friends", "sharing makes everyone happy"]),
        "sharing made the day more fun",
    )


def _plot_fear(s: _Story, hero: Character, friend: Character, place) -> None:
    fear, short = s.pick(FEARS)
    helper = s.pick(HELPERS)
    s.say(f"But {hero.name} was afraid of {fear}.", f"There was one thing {hero.name} did not like: {fear}.")
    s.new_paragraph()
    s.say(f"One night, {hero.name} saw {fear} and hid.", f"One day, {hero.name} had to face {fear}.")
    s.say(
        f'"I am scared," said {hero.name} in a small voice.',
        f"{_cap(hero.he)} felt {s.pick(SAD)} and started to shake.",
    )
    s.say(
        f"{hero.his.capitalize()} {helper} came and sat next to {hero.him}.",
        f"{hero.name}'s {helper} gave {hero.him} a hug.",
    )
    s.say(
        f'"It is okay to be scared," said {hero.his} {helper}. "But you are brave. I am here with you."',
        f'"The {short} cannot hurt you," {hero.his} {helper} said softly. "Let\'s look at it together."',
    )
    s.new_paragraph()
    s.say(f"{hero.name} took a deep breath.", f"{hero.name} held {hero.his} {helper}'s hand.")
    s.say(
        f"{_cap(hero.he)} looked again, and it was not so scary after all.",
        f"Slowly, {hero.name} was not afraid anymore.",
    )
    s.say(f'"I did it!" said {hero.name}.', f'"I am brave!" {hero.name} said with a smile.')
    _moral(
        s,
        hero,
        s.pick(
            [
                "being brave means trying even when you are scared",
                "you do not have to be afraid when someone you love is with you",
            ]
        ),
        f"{hero.his} {helper} was very proud of {hero.him}",
    )


def _plot_help(s: _Story, hero: Character, friend: Character, place) -> None:
    trouble = s.pick(
        [
            ("a little bird with a hurt wing", "the bird", "made a soft bed of leaves for it"),
            ("a kitten stuck up in a tree", "the kitten", "got a ladder and helped it climb down"),
            ("a lost puppy", "the puppy", "took it home to its family"),
            ("a baby duck far away from its mother", "the duck", "walked it back to the pond"),
            ("a frog stuck in a bucket", "the frog", "tipped the bucket over gently"),
        ]
    )
    what, short, fix = trouble
    s.new_paragraph()
    s.say(
        f"One day, {hero.name} heard a small sound {place[1]}.", f"While walking {place[1]}, {hero.name} saw something."
    )
    s.say(f"It was {what}.", f"{_cap(hero.he)} looked closer. There was {what}!")
    s.say(f'"Oh no, you poor thing," said {hero.name}.', f'"Don\'t worry, I will help you," {hero.name} said.')
    s.say(f"{hero.name} ran to get {friend.name}.", f"{hero.name} asked {friend.name} for help.")
    s.new_paragraph()
    s.say(f"Together, they {fix}.", f"{hero.name} and {friend.name} {fix}.")
    s.say(f"Soon {short} was happy and safe.", f"{_cap(short)} looked at them as if to say thank you.")
    s.say(
        f"{hero.name} felt warm and {s.pick(HAPPY)} inside.",
        f'{friend.name} said, "You have a kind heart, {hero.name}."',
    )
    _moral(
        s,
        hero,
        s.pick(
            [
                "it is good to help others",
                "being kind makes the world a better place",
                "even small helpers can do big things",
            ]
        ),
        "helping felt better than anything",
    )


def _plot_race(s: _Story, hero: Character, friend: Character, place) -> None:
    s.say(f"One day, there was a big race {place[1]}.", f"All the friends wanted to have a race {place[1]}.")
    s.say(f'"I want to win!" said {hero.name}.', f"{hero.name} wanted to be the fastest of all.")
    s.new_paragraph()
    s.say("Ready, set, go! Everyone ran as fast as they could.", "The race started, and everyone ran.")
    s.say(
        f"{hero.name} was in front, but then {hero.he} saw {friend.name} fall down.",
        f"Near the end, {friend.name} tripped on a rock and fell.",
    )
    s.say(f"{friend.name} was hurt and started to cry.", f'"Ouch!" cried {friend.name}.')
    s.say(
        f"{hero.name} stopped running. {_cap(hero.he)} went back to help {hero.his} friend.",
        f"{hero.name} could win the race, but {hero.he} turned around to help.",
    )
    s.new_paragraph()
    s.say(
        f'"Are you okay?" asked {hero.name}. {hero.name} helped {friend.name} stand up.',
        f"{hero.name} held {friend.name}'s hand, and they walked to the finish together.",
    )
    s.say("They did not win the race, but everyone clapped for them.", "They came last, but they were smiling.")
    _moral(
        s,
        hero,
        s.pick(["being a good friend is more important than winning", "helping a friend is the best way to win"]),
        "everyone cheered for them",
    )


def _plot_honest(s: _Story, hero: Character, friend: Character, place) -> None:
    thing = s.pick(["vase", "cup", "plate", "lamp", "bowl", "jar of jam"])
    helper = s.pick(HELPERS)
    s.say(f"One day, {hero.name} was playing ball in the house.", f"One day, {hero.name} was running inside the house.")
    s.say(
        f"Crash! {_cap(hero.he)} broke {hero.his} {helper}'s {thing}.",
        f"Oh no! The {thing} fell and broke into pieces.",
    )
    s.say(
        f"{hero.name} was scared. {_cap(hero.he)} hid the pieces {s.pick(HIDING_SPOTS)}.",
        f"{hero.name} did not want to get in trouble, so {hero.he} said nothing.",
    )
    s.new_paragraph()
    s.say(
        f'Later, {hero.his} {helper} asked, "Where is my {thing}?"',
        f"Soon, {hero.his} {helper} saw that the {thing} was gone.",
    )
    s.say(
        f"{hero.name} felt bad inside. {_cap(hero.he)} knew {hero.he} had to tell the truth.",
        f"{hero.name}'s tummy felt funny. Hiding it did not feel right.",
    )
    s.say(
        f'"I broke it," said {hero.name}. "I am sorry."', f'"It was me," {hero.name} said quietly. "I am very sorry."'
    )
    s.new_paragraph()
    s.say(f"{hero.his.capitalize()} {helper} gave {hero.him} a hug.", f"{hero.his.capitalize()} {helper} smiled.")
    s.say(
        f'"Thank you for telling the truth," said {hero.his} {helper}. "I am proud of you."',
        f'"Things can break, but telling the truth is what matters," said {hero.his} {helper}.',
    )
    s.say(f"Together they cleaned up and made a new {thing} out of clay.", "Then they had warm milk together.")
    _moral(
        s,
        hero,
        s.pick(["it is always best to tell the truth", "being honest is important"]),
        f"{hero.name} felt light and happy again",
    )


def _plot_adventure(s: _Story, hero: Character, friend: Character, place) -> None:
    found = s.pick(FINDS)
    helper = s.pick(HELPERS)
    s.new_paragraph()
    s.say(
        f"One day, {hero.name} and {friend.name} went on an adventure {place[1]}.",
        f"One sunny day, {hero.name} wanted to explore. {_cap(hero.he)} asked {friend.name} to come too.",
    )
    s.say(f'"Let\'s see what we can find!" said {friend.name}.', "They walked and walked and saw many new things.")
    s.say(f"Then {hero.name} saw {found} on the ground.", f"Under a tree, they found {found}.")
    s.say(f'"Wow! Look at this!" said {hero.name}.', f'"What is it?" asked {friend.name}.')
    s.new_paragraph()
    s.say(
        "But soon it was getting dark, and they did not know the way home.",
        "When they looked up, they did not know where they were.",
    )
    s.say(f"{friend.name} felt {s.pick(SAD)}.", f'"I want to go home," said {friend.name}.')
    s.say(
        f'"Don\'t worry," said {hero.name}. "We can follow the {s.pick(["river", "path", "bright star", "big hill"])}."',
        f"{hero.name} remembered the way {hero.his} {helper} showed {hero.him}.",
    )
    s.say(f"They followed it, and soon they saw {hero.name}'s house.", "Step by step, they found their way back home.")
    s.say(f"{hero.his.capitalize()} {helper} was waiting at the door with a big hug.", f"They showed everyone {found}.")
    _moral(
        s,
        hero,
        s.pick(["it is fun to explore, but it is important to stay safe", "adventures are better with a friend"]),
        "it was a day they would never forget",
    )


def _plot_build(s: _Story, hero: Character, friend: Character, place) -> None:
    thing, ruin = s.pick(BUILDS)
    s.say(
        f"One day, {hero.name} and {friend.name} made {_a(thing)} {place[1]}.",
        f"{hero.name} wanted to make the best {thing} ever.",
    )
    s.say(
        f"They worked very hard. The {thing} was big and beautiful.",
        f"It took a long time, but the {thing} looked great.",
    )
    s.new_paragraph()
    s.say(f"But then {ruin}.", f"Suddenly, {ruin}.")
    s.say(
        f'"Oh no! My {thing}!" cried {hero.name}.',
        f"{hero.name} felt so {s.pick(SAD)} that {hero.he} wanted to give up.",
    )
    s.say(
        f'"Let\'s try again," said {friend.name}. "We can make it even better."',
        f'{friend.name} said, "Don\'t give up. We can do it together."',
    )
    s.new_paragraph()
    s.say("So they tried again.", f"{hero.name} wiped {hero.his} tears and started again.")
    s.say(f"This time, the {thing} was even bigger and better than before.", f"The new {thing} was the best one yet.")
    s.say('"We did it!" they shouted.', f"{hero.name} and {friend.name} jumped up and down with joy.")
    _moral(
        s,
        hero,
        s.pick(["you should never give up", "if you try again, you can do great things"]),
        "working together made it easy",
    )


def _plot_newfriend(s: _Story, hero: Character, friend: Character, place) -> None:
    s.new_paragraph()
    s.say(
        f"One day, a new {friend.kind} came {place[1]}. {_cap(friend.his)} name was {friend.name}.",
        f"One day, {hero.name} saw {_a(friend.kind)} sitting all alone {place[1]}. It was {friend.name}.",
    )
    s.say(
        f"{friend.name} was shy and did not talk to anyone.",
        f"{friend.name} looked {s.pick(['lonely', 'shy', 'sad'])}.",
    )
    s.say(f"The others did not ask {friend.name} to play.", "Nobody played with the new friend.")
    s.new_paragraph()
    s.say(
        f'{hero.name} walked over and said, "Hi! Do you want to play with me?"',
        f'"Hello, I am {hero.name}," said {hero.name}. "Would you like to {s.pick(ACTIVITIES)} with me?"',
    )
    s.say(f'{friend.name} smiled. "Yes, please!"', f'"I would love to," said {friend.name} softly.')
    s.say("They played all afternoon and had so much fun.", "Soon they were laughing and playing together.")
    s.say(f"After that day, {hero.name} and {friend.name} were best friends.", f"{friend.name} was not shy anymore.")
    _moral(
        s,
        hero,
        s.pick(["it is good to be kind to someone new", "a kind word can make a new friend"]),
        "everyone was happy",
    )


def _plot_plant(s: _Story, hero: Character, friend: Character, place) -> None:
    seed, grown = s.pick(PLANTS)
    helper = s.pick(HELPERS)
    s.say(
        f"One day, {hero.his} {helper} gave {hero.him} a small {seed}.",
        f"{hero.name} found a little {seed} {place[1]}.",
    )
    s.say(
        f'"If you plant it and wait, it will grow," said {hero.his} {helper}.',
        f"{hero.name} put the {seed} in the dirt and gave it some water.",
    )
    s.new_paragraph()
    s.say(f"Every day, {hero.name} looked at the dirt. Nothing happened.", "The next day, there was nothing to see.")
    s.say(
        f'"Why is it not growing?" asked {hero.name}.',
        f"{hero.name} was not happy. {_cap(hero.he)} wanted it to grow now.",
    )
    s.say(
        f'"Be patient," said {hero.his} {helper}. "Good things take time."',
        f'"You have to wait," said {friend.name}. "Keep giving it water."',
    )
    s.new_paragraph()
    s.say(f"So {hero.name} waited and gave it water every day.", f"{hero.name} waited and waited.")
    s.say(f"One morning, {hero.he} saw a tiny green leaf!", "Then, one day, a little green sprout came up.")
    s.say(f"Soon it grew into {grown}.", f"After many days, it was {grown}.")
    s.say(f"{hero.name} clapped {hero.his} hands.", f'"Look! It grew!" shouted {hero.name}.')
    _moral(
        s,
        hero,
        s.pick(["good things come to those who wait", "being patient is important"]),
        f"{hero.name} was so {s.pick(HAPPY)}",
    )


PLOTS: list[Callable[[_Story, Character, Character, tuple[str, str]], None]] = [
    _plot_lost,
    _plot_share,
    _plot_fear,
    _plot_help,
    _plot_race,
    _plot_honest,
    _plot_adventure,
    _plot_build,
    _plot_newfriend,
    _plot_plant,
]


def generate_story(rng: random.Random) -> str:
    """One story (no separator); uses only ``rng`` for randomness."""
    s = _Story(rng)
    hero = s.character()
    friend = s.character()
    place = s.pick(PLACES)
    _opening(s, hero, place)
    s.pick(PLOTS)(s, hero, friend, place)
    return s.text()


def iter_stories(num_stories: int, seed: int = 0) -> Iterator[str]:
    """Yield ``num_stories`` stories; the same ``seed`` always yields the same stories."""
    if num_stories < 0:
        raise ValueError(f"num_stories must be >= 0, got {num_stories}")
    rng = random.Random(seed)
    for _ in range(num_stories):
        yield generate_story(rng)


def generate_corpus(num_stories: int, seed: int = 0) -> str:
    """``num_stories`` stories, each followed by a line ``<|endoftext|>`` (TinyStories' layout)."""
    return "".join(f"{story}\n{EOT}\n" for story in iter_stories(num_stories, seed))


def write_corpus(path: str | os.PathLike, num_stories: int, seed: int = 0) -> int:
    """Write the corpus atomically to ``path``; returns the number of bytes written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with atomic_write(path, "w", encoding="utf-8", newline="\n") as f:
        for story in iter_stories(num_stories, seed):
            chunk = f"{story}\n{EOT}\n"
            f.write(chunk)
            n += len(chunk.encode("utf-8"))
    return n


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m cs336_basics.quickstart.storygen",
        description="Write N synthetic children's stories, each followed by <|endoftext|> (deterministic).",
    )
    p.add_argument("--stories", type=int, required=True, help="number of stories (about 450 bytes each)")
    p.add_argument("--seed", type=int, default=0, help="the same seed writes the same text (default 0)")
    p.add_argument("--output", required=True, help="text file to write (atomically; folders are created)")
    args = p.parse_args(argv)
    if args.stories < 1:
        p.error(f"--stories must be >= 1, got {args.stories}")
    n = write_corpus(args.output, args.stories, seed=args.seed)
    print(f"wrote {args.stories:,} stories ({n / 1e6:.2f} MB) to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
