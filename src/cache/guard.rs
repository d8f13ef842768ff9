//! A lexical check a semantic candidate must pass besides its cosine similarity. Small sentence
//! encoders score near-opposite questions as near-identical: measured with all-MiniLM-L6-v2,
//! "Should I restart the server?" vs "Should I not restart the server?" is 0.971, and
//! "100 degrees Fahrenheit in Celsius" vs "100 degrees Celsius in Fahrenheit" is 0.996 — above
//! any usable threshold. So a candidate is only served when both questions carry the same
//! negations, the same numbers in the same order, and the words they share in the same order.
//! The check is conservative: it can cost a hit on a paraphrase, never serve a different question.

/// Words that flip a question's meaning (after lower-casing and splitting `n't`).
const NEGATIONS: &[&str] =
    &["not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "nowhere", "without", "cannot"];

/// Number words, compared like digits.
const NUMBER_WORDS: &[&str] = &[
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "seventy",
    "eighty",
    "ninety",
    "hundred",
    "thousand",
    "million",
    "billion",
    "half",
    "double",
    "twice",
    "first",
    "second",
    "third",
    "last",
];

/// Function words: free to differ and to move.
const STOPWORDS: &[&str] = &[
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "am", "do", "does", "did", "can", "could", "would",
    "should", "will", "shall", "may", "might", "must", "i", "me", "my", "you", "your", "we", "our", "it", "its",
    "this", "that", "these", "those", "there", "what", "which", "who", "whom", "how", "when", "where", "why", "to",
    "of", "in", "on", "at", "for", "by", "with", "from", "about", "into", "onto", "and", "or", "but", "if", "so", "as",
    "please", "s", "d", "ll", "ve", "re", "m", "have", "has", "had", "get", "some", "any", "tell", "give",
];

/// Lower-cased word tokens, with `n't` split off as `not` and `cannot` as `can not`.
fn tokens(text: &str) -> Vec<String> {
    let lower = text.to_lowercase().replace('’', "'");
    let mut out = Vec::new();
    for raw in lower.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '.' || c == ',')) {
        // Keep `1,000` and `3.5` whole; elsewhere `.` and `,` are punctuation.
        let word = raw.trim_matches(|c: char| c == '\'' || c == '.' || c == ',');
        if word.is_empty() {
            continue;
        }
        if word.chars().any(|c| c.is_ascii_digit()) {
            out.push(word.replace(',', ""));
            continue;
        }
        for part in word.split(['.', ',']) {
            if let Some(stem) = part.strip_suffix("n't") {
                let stem = match stem {
                    "wo" => "will",
                    "ca" => "can",
                    "sha" => "shall",
                    other => other,
                };
                if !stem.is_empty() {
                    out.push(stem.to_owned());
                }
                out.push("not".to_owned());
            } else if part == "cannot" {
                out.push("can".to_owned());
                out.push("not".to_owned());
            } else {
                for piece in part.split('\'') {
                    if !piece.is_empty() {
                        out.push(piece.to_owned());
                    }
                }
            }
        }
    }
    out
}

fn is_number(token: &str) -> bool {
    token.chars().any(|c| c.is_ascii_digit()) || NUMBER_WORDS.contains(&token)
}

/// Why two questions are not interchangeable, if they are not.
pub fn mismatch(a: &str, b: &str) -> Option<&'static str> {
    let (ta, tb) = (tokens(a), tokens(b));
    let negations = |t: &[String]| t.iter().filter(|w| NEGATIONS.contains(&w.as_str())).count();
    if negations(&ta) != negations(&tb) {
        return Some("negation");
    }
    let numbers = |t: &[String]| -> Vec<String> { t.iter().filter(|w| is_number(w)).cloned().collect() };
    if numbers(&ta) != numbers(&tb) {
        return Some("number");
    }
    let significant = |t: &[String]| -> Vec<String> {
        let mut seen = Vec::new();
        for w in t {
            if !STOPWORDS.contains(&w.as_str())
                && !is_number(w)
                && !NEGATIONS.contains(&w.as_str())
                && !seen.contains(w)
            {
                seen.push(w.clone());
            }
        }
        seen
    };
    let (sa, sb) = (significant(&ta), significant(&tb));
    let shared_a: Vec<&String> = sa.iter().filter(|w| sb.contains(w)).collect();
    let shared_b: Vec<&String> = sb.iter().filter(|w| sa.contains(w)).collect();
    if shared_a != shared_b {
        return Some("order");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenises_contractions_and_numbers() {
        assert_eq!(tokens("Can't I pay 1,000 USD?"), ["can", "not", "i", "pay", "1000", "usd"]);
        assert_eq!(tokens("What's 3.5 x 2?"), ["what", "s", "3.5", "x", "2"]);
        assert_eq!(tokens("I cannot"), ["i", "can", "not"]);
    }

    #[test]
    fn paraphrases_pass_and_traps_do_not() {
        assert_eq!(mismatch("How do I reset my password?", "How can I reset my password?"), None);
        assert_eq!(mismatch("What is the capital of France?", "What's the capital of France?"), None);
        assert_eq!(mismatch("Which plan includes priority support?", "Which plan has priority support?"), None);
        assert_eq!(mismatch("Should I restart the server?", "Should I not restart the server?"), Some("negation"));
        assert_eq!(mismatch("Can I cancel my order?", "Can't I cancel my order?"), Some("negation"));
        assert_eq!(mismatch("Convert 5 miles to km.", "Convert 50 miles to km."), Some("number"));
        assert_eq!(mismatch("Book a table for two.", "Book a table for four."), Some("number"));
        assert_eq!(
            mismatch("What is 100 degrees Fahrenheit in Celsius?", "What is 100 degrees Celsius in Fahrenheit?"),
            Some("order")
        );
    }
}
