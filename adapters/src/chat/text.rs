//! Word-level helpers shared by the parser and the title matcher: tokens, the typo
//! distance, a light stemmer, stop words and numbers.

/// Words that never name a task: articles, pronouns, politeness, auxiliaries and the nouns
/// people put around a title ("my CRM *task*"). Both the parser and the matcher drop them.
const STOP_WORDS: &str =
    "a about actually after again all already am an and any anything are as at be been before being bot but by can \
     could currently did do does else every for from get give go got had has have hello here hey hi i if im in \
     instead into is it its ive job jobs just kindly know let lets like may me might mine most must my need now of \
     ok okay on one ones or our out please pls plz project projects put really see shall should so some something \
     still stuff task tasks than thank thanks that thats the then there these thing things this those till to too u \
     until up us very want was we were what whats which who will with would yet you your";

/// The message's words: lower case, apostrophes dropped (so "how's" is one word, "hows"),
/// split at anything that is not a letter or a digit.
pub(super) fn tokens(text: &str) -> Vec<String> {
    let text: String = text.chars().filter(|c| !matches!(c, '\'' | '’' | '‘' | '`')).collect::<String>().to_lowercase();
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_owned).collect()
}

/// Damerau–Levenshtein distance (optimal string alignment) in characters: a swap of two
/// neighbours ("pasue") costs one edit, as it is the commonest typo.
pub(super) fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// Whether `word` is `keyword` or a one-edit typo of it. Short words are exact only: one
/// edit turns a three-letter word into too many others. Between two four-letter words only
/// a swap counts, because one changed letter makes real words of them ("shop" is not
/// "stop", "gold" is not "hold") while a swap rarely does ("lgos", "skpi").
pub(super) fn typo_of(word: &str, keyword: &str) -> bool {
    if word == keyword {
        return true;
    }
    let (w, k) = (word.chars().count(), keyword.chars().count());
    // Lengths two apart are two edits apart at least: no need to count them.
    if w < 4 || k < 4 || w.abs_diff(k) > 1 || distance(word, keyword) > 1 {
        return false;
    }
    if w == 4 && k == 4 {
        let (mut a, mut b): (Vec<char>, Vec<char>) = (word.chars().collect(), keyword.chars().collect());
        a.sort_unstable();
        b.sort_unstable();
        return a == b;
    }
    true
}

/// A stemmer light enough to be predictable: plural and -ing/-ed endings go, so "imports",
/// "importing" and "imported" all meet "import". Both sides of a comparison are stemmed
/// alike, so a crude stem ("runn") still matches itself.
pub(super) fn stem(word: &str) -> String {
    let len = word.chars().count();
    if len > 4 && word.ends_with("ies") {
        return format!("{}y", &word[..word.len() - 3]);
    }
    if len > 4 && ["ches", "shes", "xes", "zes", "sses"].iter().any(|end| word.ends_with(end)) {
        return word[..word.len() - 2].to_owned();
    }
    if len > 3 && word.ends_with('s') && !["ss", "us", "is"].iter().any(|end| word.ends_with(end)) {
        return word[..word.len() - 1].to_owned();
    }
    for ending in ["ing", "ed"] {
        if len >= ending.len() + 3 && word.ends_with(ending) {
            return word[..word.len() - ending.len()].to_owned();
        }
    }
    word.to_owned()
}

/// Whether `word` is one of the [`STOP_WORDS`].
pub(super) fn is_stop(word: &str) -> bool {
    static STOPS: std::sync::OnceLock<std::collections::HashSet<&'static str>> = std::sync::OnceLock::new();
    STOPS.get_or_init(|| STOP_WORDS.split_whitespace().collect()).contains(word)
}

/// A small number as people write it in a chat: "2", "two", "second", "2nd".
pub(super) fn number(word: &str) -> Option<u32> {
    const WORDS: [&str; 10] = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"];
    const ORDINALS: [&str; 10] =
        ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"];
    if let Some(i) = WORDS.iter().chain(ORDINALS.iter()).position(|w| *w == word) {
        return Some(i as u32 % 10 + 1);
    }
    let digits = ["st", "nd", "rd", "th"].iter().find_map(|end| word.strip_suffix(end)).unwrap_or(word);
    digits.parse().ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_drop_case_punctuation_and_apostrophes() {
        assert_eq!(tokens("How’s my CRM-task going?!"), ["hows", "my", "crm", "task", "going"]);
        assert_eq!(tokens("  ...  "), Vec::<String>::new());
    }

    #[test]
    fn distance_counts_a_swap_as_one_edit() {
        assert_eq!(distance("pasue", "pause"), 1);
        assert_eq!(distance("cancle", "cancel"), 1);
        assert_eq!(distance("staus", "status"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
    }

    #[test]
    fn typos_need_four_letters_and_four_letter_words_only_swap() {
        assert!(typo_of("staus", "status"));
        assert!(typo_of("lgos", "logs"));
        assert!(typo_of("stops", "stop"));
        assert!(!typo_of("shop", "stop"));
        assert!(!typo_of("old", "hold"));
        assert!(!typo_of("lo", "log"));
        assert!(!typo_of("stoop", "status"));
    }

    #[test]
    fn stems_meet_across_endings() {
        for word in ["imports", "importing", "imported", "import"] {
            assert_eq!(stem(word), "import", "{word}");
        }
        assert_eq!(stem("status"), "status");
        assert_eq!(stem("process"), "process");
        assert_eq!(stem("boxes"), "box");
        assert_eq!(stem("entries"), "entry");
        assert_eq!(stem("need"), "need");
    }

    #[test]
    fn numbers_in_words_digits_and_ordinals() {
        assert_eq!(number("2"), Some(2));
        assert_eq!(number("two"), Some(2));
        assert_eq!(number("second"), Some(2));
        assert_eq!(number("3rd"), Some(3));
        assert_eq!(number("tenth"), Some(10));
        assert_eq!(number("0"), None);
        assert_eq!(number("store"), None);
    }
}
