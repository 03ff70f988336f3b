"""Compile a definition's source where it was written (its lines and columns in the user's file)."""
import ast

from compiler.ir.nodes import SourceLoc



def _shift(tree: ast.AST, loc: SourceLoc, all_lines: bool = True) -> ast.AST:
    """Move line/column numbers back to where the code stands in the user's file.

    Sources of statements lost ``loc.col`` columns on every line; a lambda's
    only on its first (its other lines are kept as written).
    """
    line_shift, col_shift = loc.line - 1, loc.col
    if line_shift or col_shift:
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) is not None:
                shift_col = col_shift and (all_lines or node.lineno == 1)
                shift_end = col_shift and (all_lines or getattr(node, "end_lineno", None) == 1)
                node.lineno += line_shift
                if getattr(node, "end_lineno", None) is not None:
                    node.end_lineno += line_shift
                if shift_col and hasattr(node, "col_offset"):
                    node.col_offset += col_shift
                if shift_end and getattr(node, "end_col_offset", None) is not None:
                    node.end_col_offset += col_shift
    return tree


class _StripSignature(ast.NodeTransformer):
    """Defaults come from the captured values, annotations are not rebuilt (DEF_LOCAL)."""

    def __init__(self, target: ast.AST):
        self.target = target

    def _strip(self, node):
        args = node.args
        args.defaults = [ast.copy_location(ast.Constant(value=None), d) for d in args.defaults]
        args.kw_defaults = [None if d is None else ast.copy_location(ast.Constant(value=None), d)
                            for d in args.kw_defaults]
        for a in list(args.posonlyargs) + list(args.args) + list(args.kwonlyargs) + [args.vararg, args.kwarg]:
            if a is not None:
                a.annotation = None
        if hasattr(node, "returns"):
            node.returns = None
        return node

    def visit(self, node):
        if node is self.target:
            return self._strip(node)
        return node
