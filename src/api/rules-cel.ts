// The schemas' cross-field rules evaluated with @bufbuild/cel, the way the API server evaluates them. Imported for
// its effect by validate.ts; kept apart so that a receiver, which parses withoutRules, never loads CEL.
import { run } from '@bufbuild/cel';
import { setRuleEvaluator } from './rules.ts';

setRuleEvaluator((rule, self) => run(rule, { self: self as never }) === true);
