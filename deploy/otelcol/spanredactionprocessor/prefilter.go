package spanredactionprocessor

import (
	"fmt"
	"regexp/syntax"
	"sort"
	"strings"
	"unicode/utf8"
)

// A prefilter is a necessary condition for a pattern to match: the input holds one literal of each of
// its sets. Go's regexp finds no literal prefix in most PII patterns (they start with \b or a character
// class), so it runs its backtracker from every position of every text; most texts hold none of what a
// pattern needs ("@", "sk-", "eyJ", a digit), and substring searches rule them out at a fraction of
// the cost. The sets come from the pattern's syntax tree, so a policy edit needs no prefilter edit. A
// nil prefilter (nothing is required) always says "maybe".
type prefilter struct {
	// minBytes: no shorter text can match (a card number needs 13 characters).
	minBytes int
	sets     []literalSet
	// runs: stretches of one ASCII class the text must hold (a card number needs 12 digits in a row).
	// Digits are in most texts (model names, routes, numbers); runs of them are not.
	runs []classRun
}

// classRun is a requirement of at least min consecutive bytes of class.
type classRun struct {
	class byteSet
	min   int
}

// literalSet is one requirement: a byte of bytes, or one of multi.
type literalSet struct {
	bytes byteSet
	multi []literal
}

// byteSet is a set of byte values; a text's set is built once and serves every single-byte literal
// (digits, "@", "+"), which are most of them.
type byteSet [4]uint64

func (b *byteSet) add(c byte)      { b[c>>6] |= 1 << (c & 63) }
func (b *byteSet) has(c byte) bool { return b[c>>6]&(1<<(c&63)) != 0 }
func (b *byteSet) meets(o *byteSet) bool {
	return b[0]&o[0] != 0 || b[1]&o[1] != 0 || b[2]&o[2] != 0 || b[3]&o[3] != 0
}

// text is what the prefilters look at: the text, its bytes, and its ASCII lower case.
type text struct {
	s, lower string
	ascii    bool
	bytes    byteSet
}

func newText(s string) text {
	t := text{s: s, ascii: true}
	upper := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		t.bytes.add(c)
		t.ascii = t.ascii && c < utf8.RuneSelf
		upper = upper || ('A' <= c && c <= 'Z')
	}
	switch {
	case !t.ascii:
		// Runes outside ASCII fold onto ASCII letters (the Kelvin sign matches (?i)k, the long s
		// matches (?i)s): a case-insensitive literal cannot rule anything out.
	case upper:
		t.lower = strings.ToLower(s)
	default:
		t.lower = s
	}
	return t
}

// literal is one string the input may contain; fold: case-insensitively (ASCII, lower-cased here).
type literal struct {
	text string
	fold bool
}

// maxLiterals bounds a set: beyond it a substring search per literal stops being cheap.
const maxLiterals = 16

func newPrefilter(pattern string) (*prefilter, error) {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return nil, err
	}
	re = re.Simplify()
	sets, runs := distinct(required(re)), requiredRuns(re)
	if len(sets) == 0 && len(runs) == 0 {
		return nil, nil
	}
	// Sets with long literals first: they rule out most texts, and the first miss ends the check.
	sort.SliceStable(sets, func(i, j int) bool { return shortest(sets[i]) > shortest(sets[j]) })
	p := &prefilter{minBytes: minRunes(re), runs: runs}
	for _, set := range sets {
		var ls literalSet
		for _, l := range set {
			if len(l.text) == 1 && !l.fold {
				ls.bytes.add(l.text[0])
			} else {
				ls.multi = append(ls.multi, l)
			}
		}
		p.sets = append(p.sets, ls)
	}
	return p, nil
}

// distinct drops repeated literals within a set and repeated sets (x{12} requires x twelve times).
func distinct(sets [][]literal) [][]literal {
	var out [][]literal
	seen := map[string]bool{}
	for _, set := range sets {
		var kept []literal
		inSet := map[literal]bool{}
		for _, l := range set {
			if !inSet[l] {
				inSet[l] = true
				kept = append(kept, l)
			}
		}
		key := fmt.Sprint(kept)
		if !seen[key] {
			seen[key] = true
			out = append(out, kept)
		}
	}
	return out
}

// mayMatch reports whether t holds a literal of every set.
func (p *prefilter) mayMatch(t *text) bool {
	if p == nil {
		return true
	}
	if len(t.s) < p.minBytes {
		return false
	}
	for i := range p.sets {
		if !p.sets[i].heldBy(t) {
			return false
		}
	}
	for _, run := range p.runs {
		if !run.heldBy(t.s) {
			return false
		}
	}
	return true
}

func (r classRun) heldBy(s string) bool {
	n := 0
	for i := 0; i < len(s); i++ {
		if !r.class.has(s[i]) {
			n = 0
			continue
		}
		if n++; n >= r.min {
			return true
		}
	}
	return false
}

func (ls *literalSet) heldBy(t *text) bool {
	if ls.bytes.meets(&t.bytes) {
		return true
	}
	for _, l := range ls.multi {
		switch {
		case !l.fold:
			if strings.Contains(t.s, l.text) {
				return true
			}
		case !t.ascii || strings.Contains(t.lower, l.text):
			return true
		}
	}
	return false
}

// required returns sets of literals such that every match holds one literal of each set; none when
// nothing small enough to be worth checking is required.
func required(re *syntax.Regexp) [][]literal {
	switch re.Op {
	case syntax.OpLiteral:
		fold := re.Flags&syntax.FoldCase != 0
		text := string(re.Rune)
		if fold {
			for _, r := range re.Rune {
				if r >= utf8.RuneSelf {
					return nil
				}
			}
			text = strings.ToLower(text)
		}
		return [][]literal{{{text: text, fold: fold}}}
	case syntax.OpCharClass:
		// Pairs of inclusive bounds; a case-insensitive class already lists every case.
		var set []literal
		for i := 0; i+1 < len(re.Rune); i += 2 {
			for r := re.Rune[i]; r <= re.Rune[i+1]; r++ {
				if len(set) == maxLiterals {
					return nil
				}
				set = append(set, literal{text: string(r)})
			}
		}
		if len(set) == 0 {
			return nil
		}
		return [][]literal{set}
	case syntax.OpCapture, syntax.OpPlus, syntax.OpRepeat:
		if sub := mandatory(re); sub != nil {
			return required(sub)
		}
		return nil
	case syntax.OpConcat:
		// Every part is required.
		var sets [][]literal
		for _, sub := range re.Sub {
			sets = append(sets, required(sub)...)
		}
		return sets
	case syntax.OpAlternate:
		// One branch is required: the union of each branch's most selective set.
		var union []literal
		for _, sub := range re.Sub {
			best := mostSelective(required(sub))
			if best == nil || len(union)+len(best) > maxLiterals {
				return nil
			}
			union = append(union, best...)
		}
		return [][]literal{union}
	default:
		// Anchors, word boundaries, empty matches, any character, optional parts: nothing required.
		return nil
	}
}

// mandatory is the one sub-expression every match of a wrapper goes through (a capture, a +, a repetition
// of at least one), or nil when the wrapper may match without it.
func mandatory(re *syntax.Regexp) *syntax.Regexp {
	if re.Op == syntax.OpRepeat && re.Min < 1 {
		return nil
	}
	return re.Sub[0]
}

// requiredRuns finds, on the parts every match goes through, consecutive copies of one ASCII class
// (Simplify writes \d{12} as twelve \d): each copy matches one byte, so the text holds that many bytes
// of the class in a row.
func requiredRuns(re *syntax.Regexp) []classRun {
	switch re.Op {
	case syntax.OpCapture, syntax.OpPlus, syntax.OpRepeat:
		if sub := mandatory(re); sub != nil {
			return requiredRuns(sub)
		}
		return nil
	case syntax.OpConcat:
		var runs []classRun
		for i := 0; i < len(re.Sub); {
			j := i + 1
			for j < len(re.Sub) && sameASCIIClass(re.Sub[i], re.Sub[j]) {
				j++
			}
			if j-i >= 2 {
				var class byteSet
				for k := 0; k+1 < len(re.Sub[i].Rune); k += 2 {
					for r := re.Sub[i].Rune[k]; r <= re.Sub[i].Rune[k+1]; r++ {
						class.add(byte(r))
					}
				}
				runs = append(runs, classRun{class: class, min: j - i})
			} else {
				runs = append(runs, requiredRuns(re.Sub[i])...)
			}
			i = j
		}
		return runs
	default:
		return nil
	}
}

func sameASCIIClass(a, b *syntax.Regexp) bool {
	if a.Op != syntax.OpCharClass || b.Op != syntax.OpCharClass || len(a.Rune) != len(b.Rune) {
		return false
	}
	for i := range a.Rune {
		if a.Rune[i] != b.Rune[i] || a.Rune[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// minRunes is the fewest runes a match holds, so the fewest bytes (a rune takes one or more, and
// case folding maps a rune to one rune).
func minRunes(re *syntax.Regexp) int {
	switch re.Op {
	case syntax.OpLiteral:
		return len(re.Rune)
	case syntax.OpCharClass, syntax.OpAnyChar, syntax.OpAnyCharNotNL:
		return 1
	case syntax.OpCapture, syntax.OpPlus:
		return minRunes(re.Sub[0])
	case syntax.OpRepeat:
		return re.Min * minRunes(re.Sub[0])
	case syntax.OpConcat:
		n := 0
		for _, sub := range re.Sub {
			n += minRunes(sub)
		}
		return n
	case syntax.OpAlternate:
		n := -1
		for _, sub := range re.Sub {
			if m := minRunes(sub); n < 0 || m < n {
				n = m
			}
		}
		return max(n, 0)
	default:
		return 0
	}
}

// mostSelective picks the set whose shortest literal is longest, then the smallest.
func mostSelective(sets [][]literal) []literal {
	var best []literal
	for _, set := range sets {
		if best == nil || shortest(set) > shortest(best) || (shortest(set) == shortest(best) && len(set) < len(best)) {
			best = set
		}
	}
	return best
}

func shortest(set []literal) int {
	n := -1
	for _, l := range set {
		if n < 0 || len(l.text) < n {
			n = len(l.text)
		}
	}
	return n
}
