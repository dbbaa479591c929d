// Commands as argument lists. The API takes a command as an array of strings and no shell
// ever reads it, so the console splits what a person types into words here, with the
// quoting rules people know from a shell (and nothing else: no variables, globs or pipes;
// `sh -c '...'` asks for a shell explicitly), and shows stored commands quoted the same way.

/** An error naming what is wrong with a typed command. */
export class CommandError extends Error {
  constructor(message) {
    super(message);
    this.name = "CommandError";
  }
}

/**
 * Splits `text` into words: blanks separate; '…' keeps everything literally; "…" keeps
 * everything but lets `\"` and `\\` stand for themselves; a backslash outside quotes
 * keeps the next character. Throws `CommandError` for an unclosed quote or no word.
 */
export function splitCommand(text) {
  const words = [];
  let word = "";
  let inWord = false;
  let quote = null;
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    if (quote === "'") {
      if (char === "'") quote = null;
      else word += char;
    } else if (quote === '"') {
      if (char === '"') quote = null;
      else if (char === "\\" && (text[i + 1] === '"' || text[i + 1] === "\\")) word += text[++i];
      else word += char;
    } else if (char === "'" || char === '"') {
      quote = char;
      inWord = true;
    } else if (char === "\\" && i + 1 < text.length) {
      word += text[++i];
      inWord = true;
    } else if (/\s/.test(char)) {
      if (inWord) words.push(word);
      word = "";
      inWord = false;
    } else {
      word += char;
      inWord = true;
    }
  }
  if (quote) throw new CommandError(`command: a ${quote === "'" ? "single" : "double"} quote is not closed`);
  if (inWord) words.push(word);
  if (words.length === 0) throw new CommandError("command: give the program to run, e.g. `python manage.py migrate`");
  return words;
}

/** A stored command as one line a person could type again. */
export function joinCommand(words) {
  return (words ?? []).map(quoteWord).join(" ");
}

function quoteWord(word) {
  if (word !== "" && /^[\w@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replaceAll("'", `'"'"'`)}'`;
}
