//! What a terminal shows, as the matcher should see it: the bytes of one output window with
//! everything that does not print taken out, and where each piece came from.
//!
//! A value split by bytes that do not print still reads whole on a screen, so the matcher
//! looks at a *view* of the window without them:
//!
//! - escape sequences: CSI (colours, `\e[K`, cursor movement), the two-byte and `nF` escapes,
//!   and the framing of string sequences (OSC, DCS, SOS, PM, APC). A string's payload stays in
//!   the main view, because a terminal shows it too (a window title); the *rendered* view
//!   below drops it;
//! - characters that print nothing: C0 controls other than tab, line feed, carriage return,
//!   form feed and vertical tab (NUL, BEL, backspace, ...), DEL, and every character a
//!   terminal gives no width (`unicode-width` says 0: all combining marks, Hangul medial vowels
//!   and final consonants, zero-width space and joiners, bidi controls, BOM, variation
//!   selectors, tag characters; see [`zero_width`]). On a screen a mark only decorates the
//!   cell before it, so a value with marks between its characters reads whole.
//!
//! A backspace or a cursor-left (`CSI n D`) followed by more text overwrites what was there,
//! so the screen shows something the bytes do not hold in a row. The main view keeps every
//! printed byte (a log file shows them all); when a window has such moves, or a string
//! sequence, a second *rendered* view applies the overwrites and drops string payloads, and
//! both are searched. It counts columns as a terminal does: a wide character (East Asian
//! wide and fullwidth, emoji) takes two.
//!
//! Escape sequences are an allow-list ([`classify_esc`]); what is not on it is
//! [`Kind::Drop`]ped from the output, so that nothing the line model does not follow can move
//! the cursor inside a line or print:
//!
//! - modelled: SGR (`CSI ... m`), `CSI n D/C/G/a/\``, `CSI n P`, `CSI s`/`CSI u`,
//!   `ESC 7`/`ESC 8`;
//! - passed through, not modelled: row moves (`CSI H/f/A/B/E/F/d`, `ESC D/E/M`: a known
//!   limit, but full-screen programs need them), erases (`CSI J/K`), modes (`CSI ? ... h/l`,
//!   and `CSI ... h/l` but insert mode), scrolling (`CSI r/S/T/L/M`), window operations but
//!   the reports (`CSI t`), status reports and device attributes (`CSI n`, `CSI c`, `CSI > c`),
//!   keyboard settings (`CSI > ... m`, `CSI >/</= ... u`), cursor style (`CSI SP q`), keypad
//!   modes (`ESC =`, `ESC >`), full reset (`ESC c`), character set designations (`ESC ( B`,
//!   ...), and string sequences (OSC, DCS, ...) as below;
//! - dropped: REP (`CSI b`), tab stops (`ESC H`, `CSI g`), CHT/CBT (`CSI I`/`CSI Z`), HPB
//!   (`CSI j`), VPB/VPR (`CSI k`/`CSI e`), ICH (`CSI @`), ECH (`CSI X`), insert mode (`CSI 4 h`),
//!   SL/SR (`CSI SP @`/`CSI SP A`), DECIC/DECDC (`CSI ' }`/`CSI ' ~`), margins (`CSI n;m s`),
//!   DECBI/DECFI (`ESC 6`/`ESC 9`), single and locking shifts, `ESC #`, `ESC %`, C1 controls
//!   encoded in UTF-8 (but the string and CSI introducers, read as their 7-bit forms), any
//!   other final byte or private form; and, as before, what makes a terminal answer into its
//!   input or reaches the operator's clipboard (window reports, OSC 50/52, DECRQSS, XTGETTCAP).
//!
//! Nothing here knows a secret; the functions are pure and tested on their own.

/// An escape sequence longer than this is not one (its bytes are text).
const MAX_CSI: usize = 64;
/// A string sequence (OSC, DCS, ...) longer than this is not one (its bytes are text).
const MAX_STRING: usize = 4096;
/// A cursor-left count above this is taken as this (the view cannot go back further).
const MAX_BACK: usize = 1024;
/// The rendered view's right margin: a terminal stops the cursor at its last column, and
/// none is wider than this. (Text written past it goes on in the same row, as after an
/// automatic wrap.)
const MAX_COL: usize = 1024;

/// What the bytes at a position are, for the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Text: stays in the view.
    Text,
    /// Prints nothing: out of the view (`n` bytes).
    Strip(usize),
    /// A colour code (SGR): out of the view, and re-emitted after a replacement so the
    /// terminal ends in the right state.
    Sgr(usize),
    /// Backspace (`back = 1`) or cursor-left (`back = n`): out of the view; the rendered view
    /// moves its cursor back `back` columns.
    Back { len: usize, back: usize },
    /// Another cursor move inside a line (`n` bytes): out of the view; the rendered view moves
    /// its cursor.
    Move { len: usize, mv: Move },
    /// A string sequence: `open` bytes of introducer, `payload`, `close` bytes of terminator.
    String {
        open: usize,
        payload: usize,
        close: usize,
    },
    /// A sequence that makes the terminal answer or touches the clipboard: out of the view
    /// and out of the output.
    Drop(usize),
    /// Could become one of the above with more bytes: hold it.
    Partial,
}

/// A cursor move inside one line, as the rendered view's line model follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Move {
    /// `CSI n C`, `CSI n a`: `n` columns right (stopped at the right margin).
    Right(usize),
    /// `CSI n G`, `CSI n \``: to column `n` (1-based).
    Column(usize),
    /// `ESC 7`, `CSI s`: save the column.
    Save,
    /// `ESC 8`, `CSI u`: back to the saved column.
    Restore,
    /// `CSI n P`: delete `n` characters at the cursor; the rest of the line moves left.
    Delete(usize),
}

impl Move {
    /// Can the cursor end up left of where it was (so that later text lands before earlier
    /// text on the screen)?
    fn leftward(self) -> bool {
        !matches!(self, Move::Right(_) | Move::Save)
    }
}

/// Bytes that may begin something other than text (a table, so the common case is one load).
static SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = !matches!(b, 0x09..=0x0d);
        b += 1;
    }
    t[0x7f] = true;
    // UTF-8 lead bytes of characters that may print nothing: C1 controls and characters of
    // width 0 (test `zero_width_by_width_not_by_table` checks every code point). Latin,
    // Cyrillic, CJK ideographs and Hangul syllables are not among them, so they stay fast.
    let leads = [
        0xc2, 0xcc, 0xcd, 0xd2, 0xd6, 0xd7, 0xd8, 0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xe1,
        0xe2, 0xe3, 0xea, 0xed, 0xef, 0xf0, 0xf3,
    ];
    let mut k = 0;
    while k < leads.len() {
        t[leads[k]] = true;
        k += 1;
    }
    t
};

/// Index of the first byte of `s` that may begin something other than text.
pub(crate) fn first_special(s: &[u8]) -> Option<usize> {
    // A branch-free test per 64-byte block (the compiler vectorises it): any byte outside
    // printable ASCII and tab..carriage return? Only then look at the block byte by byte.
    let mut i = 0;
    for block in s.chunks_exact(64) {
        let any = block.iter().fold(0u8, |a, &b| {
            a | (u8::from(b.wrapping_sub(0x20) >= 0x5f) & u8::from(b.wrapping_sub(0x09) >= 5))
        });
        if any != 0
            && let Some(k) = block.iter().position(|&b| SPECIAL[b as usize])
        {
            return Some(i + k);
        }
        i += 64;
    }
    s[i..]
        .iter()
        .position(|&b| SPECIAL[b as usize])
        .map(|k| i + k)
}

/// Classify the bytes at the start of `s` (whose first byte is special, see [`SPECIAL`]).
pub(crate) fn classify(s: &[u8]) -> Kind {
    match s[0] {
        0x1b => classify_esc(s),
        0x08 => Kind::Back { len: 1, back: 1 },
        0x00..=0x1f | 0x7f => Kind::Strip(1),
        // C1 introducers encoded in UTF-8 (U+009B CSI, U+009D OSC, U+0090 DCS, U+0098 SOS,
        // U+009E PM, U+009F APC): a terminal reads them as their 7-bit forms, so they are
        // classified (and dropped) the same way; both are two bytes long.
        0xc2 => match s.get(1) {
            Some(0x9b) => csi(s),
            Some(0x9d) => string(s, b']'),
            Some(0x90) => string(s, b'P'),
            Some(0x98) => string(s, b'X'),
            Some(0x9e) => string(s, b'^'),
            Some(0x9f) => string(s, b'_'),
            _ => invisible(s),
        },
        _ => invisible(s),
    }
}

/// A character encoded in UTF-8 (`s[0]` is a lead byte): C1 controls and characters a
/// terminal gives no width print nothing.
fn invisible(s: &[u8]) -> Kind {
    let want = match s[0] {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return Kind::Text,
    };
    if s.len() < want {
        return if s[1..].iter().all(|&b| b & 0xc0 == 0x80) {
            Kind::Partial
        } else {
            Kind::Text
        };
    }
    let Some(c) = decode(&s[..want]) else {
        return Kind::Text;
    };
    match u32::from(c) {
        // ST on its own prints nothing.
        0x9c => Kind::Strip(2),
        // The other C1 controls (index, next line, reverse index, tab set, single shifts, ...)
        // move the cursor or change what prints, and no program needs their 8-bit forms.
        0x80..=0x9f => Kind::Drop(2),
        _ if zero_width(c) => Kind::Strip(want),
        _ => Kind::Text,
    }
}

/// The character `s` encodes in UTF-8 (`s` is its lead byte and exactly as many continuation
/// bytes as that says), if it is one.
fn decode(s: &[u8]) -> Option<char> {
    let (&lead, rest) = s.split_first()?;
    let mut c = u32::from(lead) & (0x7f >> s.len());
    for &b in rest {
        if b & 0xc0 != 0x80 {
            return None;
        }
        c = (c << 6) | u32::from(b & 0x3f);
    }
    let min = match s.len() {
        1 => 0,
        2 => 0x80,
        3 => 0x800,
        _ => 0x1_0000,
    };
    if c < min || s.len() > 4 {
        return None;
    }
    char::from_u32(c)
}

/// A character a terminal gives no cell of its own: every combining mark (Mn, Me), Hangul
/// medial vowels and final consonants, format characters (zero-width space and joiners, bidi
/// controls, BOM, ...), variation selectors and tag characters. `unicode-width` decides (the
/// widths terminals and ratatui use); the table adds the few a terminal may still draw as
/// nothing that it gives width 1 (soft hyphen, Khmer inherent vowels, Mongolian selectors,
/// ...).
pub(crate) fn zero_width(c: char) -> bool {
    // Latin first: nothing below U+0300 but the soft hyphen is a mark.
    if u32::from(c) < 0x300 {
        return u32::from(c) == 0xad;
    }
    unicode_width::UnicodeWidthChar::width(c) == Some(0)
        || matches!(
            u32::from(c),
            0xad | 0x61c
                | 0x300..=0x36f
                | 0x17b4..=0x17b5
                | 0x180b..=0x180f
                | 0x1ab0..=0x1aff
                | 0x1dc0..=0x1dff
                | 0x200b..=0x200f
                | 0x202a..=0x202e
                | 0x2060..=0x2064
                | 0x2066..=0x206f
                | 0x20d0..=0x20ff
                | 0xfe00..=0xfe0f
                | 0xfe20..=0xfe2f
                | 0xfeff
                | 0xe0000..=0xe007f
        )
}

/// Terminal width of the character at `buf[i]` (`len` bytes): 0, 1 or 2. Bytes that are not
/// a whole character print one replacement character.
fn char_width(buf: &[u8], i: usize, len: usize) -> usize {
    if buf[i] < 0x80 {
        return 1;
    }
    match decode(&buf[i..i + len]) {
        Some(c) if zero_width(c) => 0,
        Some(c) => unicode_width::UnicodeWidthChar::width(c)
            .unwrap_or(1)
            .min(2),
        None => 1,
    }
}

/// Classify an escape sequence (`s[0]` is ESC).
///
/// An allow-list (see the module header): what the line model follows, and what a program
/// needs that cannot put text elsewhere in a line than the model thinks, is kept; everything
/// else is [`Kind::Drop`]ped.
pub(crate) fn classify_esc(s: &[u8]) -> Kind {
    let Some(&b1) = s.get(1) else {
        return Kind::Partial;
    };
    match b1 {
        b'[' => csi(s),
        b']' | b'P' | b'X' | b'^' | b'_' => string(s, b1),
        0x20..=0x2f => {
            // nF: intermediates, then a final byte. Only character set designations
            // (`ESC ( B`, ...) are kept: `ESC # 8` fills the screen, `ESC # 6` doubles widths,
            // `ESC %` and `ESC SP` change how later bytes are read.
            for (i, &b) in s.iter().enumerate().skip(2).take(MAX_CSI) {
                match b {
                    0x20..=0x2f => {}
                    0x30..=0x7e if matches!(b1, b'('..=b'+' | b'-'..=b'/') => {
                        return Kind::Strip(i + 1);
                    }
                    0x30..=0x7e => return Kind::Drop(i + 1),
                    _ => return Kind::Text,
                }
            }
            if s.len() < MAX_CSI {
                Kind::Partial
            } else {
                Kind::Text
            }
        }
        b'7' => Kind::Move {
            len: 2,
            mv: Move::Save,
        },
        b'8' => Kind::Move {
            len: 2,
            mv: Move::Restore,
        },
        // Keypad modes, a lone ST, full reset; index, next line and reverse index (row moves,
        // a known limit, as `CSI A/B/E/F`).
        b'=' | b'>' | b'\\' | b'c' | b'D' | b'E' | b'M' => Kind::Strip(2),
        // Tab set (`ESC H`), back and forward index (`ESC 6`, `ESC 9`), single and locking
        // shifts, DECID (answers), and whatever else.
        0x30..=0x7e => Kind::Drop(2),
        _ => Kind::Text,
    }
}

/// A control sequence (`CSI`, `ESC [` or U+009B, both two bytes): parameter bytes, then
/// intermediates, then a final byte.
fn csi(s: &[u8]) -> Kind {
    // `plain`: no private prefix and no intermediate; `prefix`: the private prefix (`?`, `>`,
    // `<`, `=`) when it comes first; `inter`: the last intermediate.
    let (mut plain, mut prefix, mut inter, mut odd) = (true, None, None, false);
    for (i, &b) in s.iter().enumerate().skip(2).take(MAX_CSI) {
        match b {
            b'0'..=b'9' | b';' | b':' => odd |= inter.is_some(),
            0x3c..=0x3f => {
                plain = false;
                if i == 2 {
                    prefix = Some(b);
                } else {
                    odd = true;
                }
            }
            0x20..=0x2f => {
                plain = false;
                inter = Some(b);
            }
            0x40..=0x7e => {
                let len = i + 1;
                let params = &s[2..i];
                if odd {
                    return Kind::Drop(len);
                }
                if plain {
                    return plain_csi(b, params, len);
                }
                return match (prefix, inter, b) {
                    // Private modes (`?25l`, `?1049h`, ...), their save and restore, the
                    // selective erases, the private status report.
                    (Some(b'?'), None, b'h' | b'l' | b's' | b'r' | b'J' | b'K' | b'n') => {
                        Kind::Strip(len)
                    }
                    // Device attributes (secondary, tertiary), key modifier and keyboard
                    // protocol settings.
                    (Some(b'>'), None, b'c' | b'm' | b'u')
                    | (Some(b'='), None, b'c' | b'u')
                    | (Some(b'<'), None, b'u') => Kind::Strip(len),
                    // Cursor style (DECSCUSR).
                    (None, Some(b' '), b'q') => Kind::Strip(len),
                    _ => Kind::Drop(len),
                };
            }
            _ => return Kind::Text,
        }
    }
    if s.len() < MAX_CSI {
        Kind::Partial
    } else {
        Kind::Text
    }
}

/// A control sequence with only numeric parameters and final byte `f` (`len` bytes).
fn plain_csi(f: u8, params: &[u8], len: usize) -> Kind {
    let n = || first_param(params).unwrap_or(1).clamp(1, MAX_COL);
    match f {
        b'm' => Kind::Sgr(len),
        b'D' => Kind::Back {
            len,
            back: first_param(params).unwrap_or(1).clamp(1, MAX_BACK),
        },
        b'C' | b'a' => Kind::Move {
            len,
            mv: Move::Right(n()),
        },
        b'G' | b'`' => Kind::Move {
            len,
            mv: Move::Column(n()),
        },
        b'P' => Kind::Move {
            len,
            mv: Move::Delete(n()),
        },
        b's' if params.is_empty() => Kind::Move {
            len,
            mv: Move::Save,
        },
        b'u' if params.is_empty() => Kind::Move {
            len,
            mv: Move::Restore,
        },
        // Window reports (title, label, size, position) answer into the input.
        b't' if matches!(
            first_param(params),
            Some(11 | 13 | 14 | 15 | 16 | 18 | 19 | 20 | 21)
        ) =>
        {
            Kind::Drop(len)
        }
        // Insert mode (IRM, mode 4) shifts the line right under new text.
        b'h' if params
            .split(|&b| b == b';')
            .any(|p| p.iter().skip_while(|&&d| d == b'0').eq(b"4")) =>
        {
            Kind::Drop(len)
        }
        // Row moves (a known limit), erases, scrolling, modes, other window operations,
        // status reports and device attributes (whose answers say nothing).
        b'H' | b'f' | b'A' | b'B' | b'E' | b'F' | b'd' | b'J' | b'K' | b'r' | b'S' | b'T'
        | b'L' | b'M' | b'h' | b'l' | b't' | b'n' | b'c' => Kind::Strip(len),
        // Repeat (`b`), tab stops (`g`, `I`, `Z`), moves back and up (`j`, `k`), insert and
        // erase characters (`@`, `X`), `s`/`u` with parameters (left and right margins), and
        // everything else: left out.
        _ => Kind::Drop(len),
    }
}

fn first_param(params: &[u8]) -> Option<usize> {
    let end = params
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(params.len());
    if end == 0 {
        return None;
    }
    std::str::from_utf8(&params[..end]).ok()?.parse().ok()
}

/// OSC, DCS, SOS, PM, APC: up to BEL (OSC) or ST (`ESC \`); an ESC that starts something
/// else ends it too, as on a terminal.
fn string(s: &[u8], kind: u8) -> Kind {
    for (i, &b) in s.iter().enumerate().skip(2).take(MAX_STRING) {
        let close = match b {
            0x07 => 1,
            0x1b => match s.get(i + 1) {
                None => return Kind::Partial,
                Some(b'\\') => 2,
                Some(_) => 0,
            },
            // ST encoded in UTF-8 (U+009C).
            0xc2 => match s.get(i + 1) {
                None => return Kind::Partial,
                Some(0x9c) => 2,
                Some(_) => continue,
            },
            _ => continue,
        };
        if dropped(kind, &s[2..i]) {
            return Kind::Drop(i + close);
        }
        return Kind::String {
            open: 2,
            payload: i - 2,
            close,
        };
    }
    if s.len() < MAX_STRING {
        Kind::Partial
    } else if dropped(kind, &s[2..MAX_STRING]) {
        // Unterminated past the bound, of a kind that is left out: left out as far as seen,
        // its introducer with it, so that what follows reaches the terminal as text, outside
        // any string (review 11h: a 5 KB OSC 52 passed whole as text).
        Kind::Drop(MAX_STRING)
    } else {
        Kind::Text
    }
}

/// Whether a string sequence of `kind` with this (possibly cut) payload is left out of the
/// output: a font or clipboard operation (OSC 50, 52), a DECRQSS or XTGETTCAP request.
fn dropped(kind: u8, payload: &[u8]) -> bool {
    match kind {
        b']' => matches!(first_param(payload), Some(50 | 52)),
        b'P' => payload.starts_with(b"$q") || payload.starts_with(b"+q"),
        _ => false,
    }
}

/// A view of a window: the bytes the matcher sees, and how to find each one's raw offset.
#[derive(Default)]
pub(crate) struct View {
    pub bytes: Vec<u8>,
    /// `(view index, raw offset - view index)` from that index on (sorted by index).
    pub cuts: Vec<(usize, usize)>,
    /// Raw ranges to leave out of the output.
    pub drops: Vec<(usize, usize)>,
    /// The window has overwrites or string payloads: a rendered view sees something else.
    pub overwrites: bool,
}

impl View {
    fn push(&mut self, raw: usize, bytes: &[u8]) {
        let shift = raw - self.bytes.len();
        if self.cuts.last().map_or(0, |c| c.1) != shift {
            match self.cuts.last_mut() {
                Some(c) if c.0 == self.bytes.len() => c.1 = shift,
                _ => self.cuts.push((self.bytes.len(), shift)),
            }
        }
        self.bytes.extend_from_slice(bytes);
    }

    /// A string sequence's payload (shown by the terminal as a title, a link): its text, without
    /// the bytes in it that print nothing.
    fn push_payload(&mut self, buf: &[u8], start: usize, end: usize) {
        let mut i = start;
        while i < end {
            let next = first_special(&buf[i..end]).map_or(end, |p| i + p);
            if next > i {
                self.push(i, &buf[i..next]);
            }
            if next >= end {
                break;
            }
            i = match classify(&buf[next..end]) {
                Kind::Strip(n)
                | Kind::Sgr(n)
                | Kind::Drop(n)
                | Kind::Back { len: n, .. }
                | Kind::Move { len: n, .. } => next + n,
                Kind::String {
                    open,
                    payload,
                    close,
                } => next + open + payload + close,
                Kind::Text | Kind::Partial => {
                    self.push(next, &buf[next..next + 1]);
                    next + 1
                }
            };
        }
    }

    /// Raw offset of the byte at view index `i` (`limit` for the end).
    pub(crate) fn to_raw(&self, i: usize, limit: usize) -> usize {
        if i >= self.bytes.len() {
            return limit;
        }
        let k = self.cuts.partition_point(|c| c.0 <= i);
        i + if k == 0 { 0 } else { self.cuts[k - 1].1 }
    }

    /// Build the view of `buf` (`buf[..from]` is context, taken as text). Returns the raw
    /// offset past which bytes must be held (an incomplete sequence at the end), or `None`
    /// when nothing needs taking out (the view is `buf` itself; then nothing is built).
    pub(crate) fn build(&mut self, buf: &[u8], from: usize, eof: bool) -> Option<usize> {
        let mut first = from + first_special(&buf[from..])?;
        // Skip special bytes that are text (most non-ASCII), without building anything.
        loop {
            match classify(&buf[first..]) {
                Kind::Text => match first_special(&buf[first + 1..]) {
                    Some(p) => first = first + 1 + p,
                    None => return None,
                },
                Kind::Partial if eof => match first_special(&buf[first + 1..]) {
                    Some(p) => first = first + 1 + p,
                    None => return None,
                },
                _ => break,
            }
        }
        self.bytes.clear();
        self.cuts.clear();
        self.drops.clear();
        self.overwrites = false;
        self.bytes.extend_from_slice(&buf[..first]);
        let mut i = first;
        let mut limit = buf.len();
        while i < buf.len() {
            let kind = classify(&buf[i..]);
            let n = match kind {
                Kind::Text => {
                    self.push(i, &buf[i..i + 1]);
                    1
                }
                Kind::Partial if eof => {
                    self.push(i, &buf[i..i + 1]);
                    1
                }
                Kind::Partial => {
                    limit = i;
                    break;
                }
                Kind::Strip(n) | Kind::Sgr(n) => n,
                Kind::Drop(n) => {
                    self.drops.push((i, i + n));
                    n
                }
                Kind::Back { len, .. } => {
                    self.overwrites = true;
                    len
                }
                Kind::Move { len, mv } => {
                    self.overwrites |= mv.leftward();
                    len
                }
                Kind::String {
                    open,
                    payload,
                    close,
                } => {
                    self.overwrites = true;
                    self.push_payload(buf, i + open, i + open + payload);
                    open + payload + close
                }
            };
            i += n;
            let next = first_special(&buf[i..]).map_or(buf.len(), |p| i + p);
            if next > i {
                self.push(i, &buf[i..next]);
            }
            i = next;
        }
        Some(limit)
    }
}

/// Does `buf[from..]` hold a carriage return that does not end a line (`\r` then anything but
/// `\n`)? Text after it overwrites the line from its start, so the screen may show what the
/// bytes do not hold in a row. One at the end counts (its `\n` may never come).
pub(crate) fn bare_cr(buf: &[u8], from: usize) -> bool {
    memchr::memchr_iter(b'\r', &buf[from..]).any(|p| buf.get(from + p + 1) != Some(&b'\n'))
}

/// One character cell of the line being drawn: its bytes and the raw offset of the first. A
/// wide character takes two: its own (`wide`), then a continuation with no bytes (`len` 0).
#[derive(Clone, Copy)]
struct Cell {
    bytes: [u8; 4],
    len: u8,
    wide: bool,
    raw: usize,
}

impl Cell {
    /// A space, where a terminal blanks a cell (padding, half of an overwritten wide
    /// character).
    fn blank(raw: usize) -> Cell {
        Cell {
            bytes: [b' ', 0, 0, 0],
            len: 1,
            wide: false,
            raw,
        }
    }

    fn is_continuation(&self) -> bool {
        self.len == 0
    }
}

/// The window as a terminal draws it, one line at a time: a row of cells and a cursor that
/// backspace, `CSI n D/C/G/a/\`/P`, `\r`, tab (stops every 8 columns: the sequences that
/// change them are dropped) and save/restore move, text overwriting the cells it lands on. A
/// character takes as many cells as it is wide (a wide one a second, empty, continuation
/// cell; overwriting either half blanks the other); one of width 0 takes none (see
/// [`Rendered::put_char`]). Built only for a window that moves the cursor left (see [`View::overwrites`]
/// and [`bare_cr`]). Cells keep their raw offsets, which need not grow along the view: a
/// match maps back to the smallest raw range holding all of its cells.
///
/// Not modelled (known limits, see docs/threat-model.md): moves to another row (`CSI H`,
/// `CSI A/B`), and a line drawn across two windows.
#[derive(Default)]
pub(crate) struct Rendered {
    pub bytes: Vec<u8>,
    /// Raw offset of each byte of `bytes`.
    raw: Vec<usize>,
    line: Vec<Cell>,
    cursor: usize,
    saved: usize,
}

impl Rendered {
    /// Draw `buf` (`buf[..from]` is context, taken as text). Returns the raw offset past which
    /// bytes must be held (an incomplete sequence at the end).
    pub(crate) fn build(&mut self, buf: &[u8], from: usize, eof: bool) -> usize {
        self.bytes.clear();
        self.raw.clear();
        self.line.clear();
        self.cursor = 0;
        self.saved = 0;
        self.bytes.extend_from_slice(&buf[..from]);
        self.raw.extend(0..from);
        let mut i = from;
        let mut limit = buf.len();
        while i < buf.len() {
            let b = buf[i];
            if SPECIAL[b as usize] {
                match classify(&buf[i..]) {
                    Kind::Text => i += self.put_char(buf, i),
                    Kind::Partial if eof => i += self.put_char(buf, i),
                    Kind::Partial => {
                        limit = i;
                        break;
                    }
                    Kind::Strip(n) | Kind::Sgr(n) | Kind::Drop(n) => i += n,
                    Kind::String {
                        open,
                        payload,
                        close,
                    } => i += open + payload + close,
                    Kind::Back { len, back } => {
                        self.cursor = self.cursor.min(MAX_COL).saturating_sub(back);
                        i += len;
                    }
                    Kind::Move { len, mv } => {
                        self.apply(mv);
                        i += len;
                    }
                }
                continue;
            }
            match b {
                b'\n' | 0x0b | 0x0c => {
                    self.end_line();
                    self.bytes.push(b);
                    self.raw.push(i);
                    i += 1;
                }
                b'\r' => {
                    self.cursor = 0;
                    i += 1;
                }
                b'\t' => {
                    self.cursor = ((self.cursor / 8 + 1) * 8).min(MAX_COL);
                    i += 1;
                }
                _ => i += self.put_char(buf, i),
            }
        }
        self.end_line();
        limit
    }

    fn apply(&mut self, mv: Move) {
        match mv {
            Move::Right(n) => self.cursor = (self.cursor + n).min(MAX_COL),
            Move::Column(n) => self.cursor = (n - 1).min(MAX_COL),
            Move::Save => self.saved = self.cursor,
            Move::Restore => self.cursor = self.saved,
            Move::Delete(n) => {
                let at = self.cursor.min(self.line.len());
                let end = (at + n).min(self.line.len());
                self.line.drain(at..end);
                self.mend(at);
            }
        }
    }

    /// Write the character at `buf[i]` where the cursor is, over as many cells as it is wide;
    /// returns its length in bytes. A character of width 0 never comes here: [`classify`]
    /// leaves it out of both views (on a screen it only marks the cell before it), so a value
    /// with marks between its characters is whole here too.
    fn put_char(&mut self, buf: &[u8], i: usize) -> usize {
        let want = match buf[i] {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => 1,
        };
        let mut len = 1;
        while len < want && buf.get(i + len).is_some_and(|&c| c & 0xc0 == 0x80) {
            len += 1;
        }
        let width = char_width(buf, i, len);
        if width == 0 {
            return len;
        }
        let mut cell = Cell {
            bytes: [0; 4],
            len: len as u8,
            wide: width == 2,
            raw: i,
        };
        cell.bytes[..len].copy_from_slice(&buf[i..i + len]);
        let at = self.cursor;
        let end = at + width;
        if self.line.len() < end {
            self.line.resize(end, Cell::blank(i));
        }
        // Writing over half of a wide character blanks its other half, as terminals do.
        if self.line[at].is_continuation() && at > 0 {
            self.line[at - 1] = Cell::blank(self.line[at - 1].raw);
        }
        if self.line.get(end).is_some_and(Cell::is_continuation) {
            self.line[end] = Cell::blank(self.line[end].raw);
        }
        self.line[at] = cell;
        if width == 2 {
            self.line[at + 1] = Cell {
                bytes: [0; 4],
                len: 0,
                wide: false,
                raw: i,
            };
        }
        self.cursor = end;
        len
    }

    /// After cells were deleted at `at`: a wide character cut in half is blanked.
    fn mend(&mut self, at: usize) {
        if self.line.get(at).is_some_and(Cell::is_continuation) {
            self.line[at] = Cell::blank(self.line[at].raw);
        }
        if at > 0 && self.line[at - 1].wide && !self.line.get(at).is_some_and(Cell::is_continuation)
        {
            self.line[at - 1] = Cell::blank(self.line[at - 1].raw);
        }
    }

    fn end_line(&mut self) {
        for c in self.line.drain(..) {
            let n = usize::from(c.len);
            self.bytes.extend_from_slice(&c.bytes[..n]);
            self.raw.extend(c.raw..c.raw + n);
        }
        self.cursor = 0;
        self.saved = 0;
    }

    /// The smallest raw range `[lo, hi)` holding every byte of view range `[s, e)` (`limit`
    /// for an empty range at the end).
    pub(crate) fn raw_span(&self, s: usize, e: usize, limit: usize) -> (usize, usize) {
        let cells = &self.raw[s.min(self.raw.len())..e.min(self.raw.len())];
        match (cells.iter().min(), cells.iter().max()) {
            (Some(&lo), Some(&hi)) => (lo, hi + 1),
            _ => (limit, limit),
        }
    }
}

/// Append the colour codes inside a replaced raw range, so the terminal ends in the same
/// state; nothing else of it (other sequences there belong to the replaced value).
pub(crate) fn keep_sgr(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while let Some(p) = memchr::memchr(0x1b, &raw[i..]) {
        let at = i + p;
        match classify_esc(&raw[at..]) {
            Kind::Sgr(n) => {
                out.extend_from_slice(&raw[at..at + n]);
                i = at + n;
            }
            _ => i = at + 1,
        }
    }
}
